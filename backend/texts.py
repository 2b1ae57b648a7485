"""Every sentence a user reads, in English and Simplified Chinese; both bots share this catalog.

`text(key, lang, **values)` picks the language from a Telegram `language_code` or a Discord locale
(`zh`, `zh-CN`, `zh-hans` → Chinese; anything else → English). Refusal and failure keys are the
stable error codes of `backend.errors`.
"""

from __future__ import annotations

import logging
from typing import Any

CATALOG: dict[str, dict[str, str]] = {
    "en": {
        # Refusals at intake: one polite sentence that says what to do.
        "not_an_image": "That doesn't look like a photo. Please send a JPEG, PNG, WEBP, BMP, TIFF or GIF image.",
        "unsupported_format": "I can't read this image format. Please send a JPEG, PNG, WEBP, BMP, TIFF or GIF image.",
        "image_broken": "This image file seems damaged. Please export it again and resend it.",
        "image_empty": "This file is empty. Please send the photo again.",
        "too_large": "This file is larger than {max_mb} MB. Please send a smaller or compressed copy.",
        "too_many_pixels": "This image has more than {max_mp} megapixels. Please resize it and send it again.",
        "too_many_active": "You already have {limit} photos in progress. Please wait for them to finish.",
        "rate_limited": "You've reached {limit} photos this hour. Please try again a bit later.",
        "queue_full": "We're very busy right now. Please try again in a few minutes.",
        "paused": "Colorizing is paused for maintenance. Please try again a little later.",
        "unknown_mode": "I don't know that mode. Please choose one of: {modes}.",
        "bad_params": "Those settings aren't allowed. Please send the photo without them.",
        # Failures after intake.
        "comfyui_rejected": "Sorry, this photo couldn't be processed. Please try another photo or mode.",
        "comfyui_failed": "Sorry, colorizing this photo failed. Please try again or pick another mode.",
        "model_unavailable": "Sorry, the colorizing model isn't working right now. Our admins have been told; please try again later.",
        "output_invalid": "Sorry, the colorized image came out broken. Please try again.",
        "timeout": "Sorry, this photo took too long to colorize. Please try again later.",
        "too_many_attempts": "Sorry, this photo failed several times. Our admins have been told; please try another one.",
        "undeliverable": "Sorry, your colorized photo couldn't be sent here after several tries. Our admins have been told.",
        "input_expired": "Sorry, your photo expired before we got to it. Please send it again.",
        "output_expired": "Sorry, the colorized photo expired before it could be delivered. Please send it again.",
        "malformed_task": "Sorry, something went wrong with this request. Please send the photo again.",
        "internal": "Sorry, something went wrong on our side. Please try again.",
        "cancelled": "Cancelled. Send another photo whenever you like.",
        # Status and results.
        "queued": "Queued — #{position} in line, about {eta} s.",
        "queued_album": "Queued {count} photos — first is #{position} in line, about {eta} s.",
        "started": "Colorizing…",
        "running": "Colorizing… {elapsed} s",
        "running_eta": "Colorizing… {elapsed} s of about {eta} s",
        "sending": "Sending your photo…",
        "queued_no_eta": "Queued — #{position} in line.",
        "queued_album_no_eta": "Queued {count} photos — first is #{position} in line.",
        "progress": "Colorizing… {percent}%",
        "retrying": "Still working on it — retrying…",
        "done": "Done.",
        "result_caption": "Colorized ({mode}) in {seconds} s ({run} s of it colorizing).",
        "result_caption_album": "{count} photos colorized ({mode}) in {seconds} s.",
        "album_buttons": "More with these photos (numbered as in the album):",
        "downscaled_note": "The full image was too large to upload, so this is a smaller copy.",
        "button_cancel": "Cancel",
        "button_other_mode": "Try {mode}",
        "button_compare": "Compare",
        "compare_caption": "Before / after",
        "compare_before": "Before",
        "compare_after": "After",
        "chart_title": "Last {minutes} min: {done} done, {failed} failed, {cancelled} cancelled · run time p50 {p50} s, p90 {p90} s",
        "chart_done": "done",
        "chart_failed": "failed",
        "chart_cancelled": "cancelled",
        "chart_p50": "run time p50",
        "chart_p90": "run time p90",
        "chart_x": "minutes ago",
        "chart_y": "photos finished per minute",
        "chart_run_time": "run time (s)",
        "compare_unavailable": "Sorry, the original photo is no longer available for a comparison.",
        "nothing_to_cancel": "You have nothing waiting to cancel.",
        "cancelled_count_one": "Cancelled 1 photo.",
        "cancelled_count_other": "Cancelled {count} photos.",
        "mode_set": "Your default mode is now {mode}.",
        "mode_usage": "Your default mode is {mode}. Pick another below, or use /mode <name> ({modes}).",
        "not_allowed": "Sorry, you're not allowed to do that.",
        "not_yours": "That button belongs to someone else's photo. To colorize your own, use /colorize or send a photo.",
        "button_gone": "That button no longer applies.",
        "other_mode_running": "It's already on its way in {mode}.",
        "other_mode_done": "Here it is again in {mode}.",
        "button_retry": "Retry",
        "admin_dlq_line": "{task} ({when} UTC): {reason}",
        "admin_dlq_retry": "Retry {task}",
        "admin_stats": "Last {minutes} min: {done} done, {failed} failed, {cancelled} cancelled ({per_min}/min)\nRun time p50 {p50} s, p90 {p90} s, p99 {p99} s",
        "admin_status_counts": "Queued: {queued}   Running: {running}   Dead letters: {dead}",
        "admin_status_flow": "Paused: {paused}   Oldest in flight: {oldest} s   Avg run: {avg} s   Results to send: {to_notify}",
        "admin_yes": "yes",
        "admin_no": "no",
        "admin_status_waiting_one": "Waiting for a {platform} notifier: 1 result (no running notifier has its sender)",
        "admin_status_waiting_other": "Waiting for a {platform} notifier: {count} results (no running notifier has its sender)",
        "admin_status_workers": "Workers:",
        "admin_status_worker": "  {name}: {pending} in hand, idle {idle} s",
        "admin_status_no_workers": "Workers: none registered",
        "admin_status_comfyui": "ComfyUI {url}: {health}, running {running}, waiting {waiting}",
        "admin_up": "up",
        "admin_down": "DOWN",
        "admin_mute_usage": "Use /mute_alerts <minutes> (0 turns alerts on again).",
        "admin_muted": "Alerts muted for {minutes} min.",
        "admin_unmuted": "Alerts are on again.",
        "too_many_pixels_ceiling": "This image is {width}×{height} ({mp} megapixels), more than the {max_mp} megapixels I can take even by shrinking it. Please resize it and send it again.",
        "shrunk_note": "Your image was {width}×{height} ({mp} MP), over my limit, so I colorize a copy shrunk to {new_width}×{new_height} ({new_mp} MP).",
        "backlog_waiting_one": "1 more waits for your earlier photos and starts by itself.",
        "backlog_waiting_other": "{count} more wait for your earlier photos and start by themselves.",
        "backlog_only_one": "Waiting for your earlier photos — this one starts by itself.",
        "backlog_only_other": "Waiting for your earlier photos — these {count} start by themselves.",
        "backlog_full_one": "I took {taken} of your {sent} photos; please send the other one again once these are done.",
        "backlog_full_other": "I took {taken} of your {sent} photos; please send the other {count} again once these are done.",
        "received_many": "Got them — putting your {count} photos in line…",
        "unknown_command": "I don't know {command}. Send a photo to colorize it, or try /help.",
        "where_none": "You have no photos waiting.",
        "where_queued": "Photo {index}: #{position} in line, about {eta} s.",
        "where_queued_no_eta": "Photo {index}: #{position} in line.",
        "where_running": "Photo {index}: colorizing now.",
        "help_admin": "Admin: /queue, /stats, /dlq, /retry <task_id>, /purge_dlq, /pause, /resume, /mute_alerts <minutes>.",
        "cmd_where": "Where your photos are in line",
        "cmd_start": "What this bot does",
        "cmd_help": "Modes and limits",
        "cmd_mode": "Show or choose your default mode",
        "cmd_cancel": "Cancel your waiting photos",
        "cmd_admin": "Operate repairbot (admins only)",
        "cmd_queue": "Queue, workers and ComfyUI at a glance",
        "cmd_stats": "Throughput and run times of the last hour, with a chart",
        "cmd_dlq": "The latest dead letters, with Retry",
        "cmd_retry": "Queue a dead task again",
        "cmd_retry_task": "Task id or dead-letter entry id",
        "cmd_purge": "Delete every dead letter",
        "cmd_purge_dlq": "Delete every dead letter",
        "cmd_pause": "Stop starting new photos",
        "cmd_resume": "Start photos again",
        "cmd_mute_alerts": "Silence the operations alerts for some minutes (0 lifts)",
        "cmd_mute_alerts_minutes": "How long to stay quiet; 0 turns alerts on again",
        "start": "Hi! Send me an old black-and-white photo and I'll send it back in color.",
        "help": (
            "Send a black-and-white photo (as a photo, or as a file for full resolution) and I'll colorize it.\n"
            "Modes:\n{modes}\nPut a mode's name in the caption, or set your default with /mode.\n"
            "Limits: up to {max_mb} MB and {max_mp} megapixels per image, {active} photos at a time, "
            "{hourly} per hour.\n"
            "/cancel stops your waiting photos; /where shows where they are in line."
        ),
        "error_generic": "Sorry, something went wrong. Please try again.",
        "admin_paused": "Paused: no new tasks will start.",
        "admin_resumed": "Resumed.",
        "admin_retried": "Task {task_id} is queued again.",
        "admin_retry_missing": "No dead letter for {task_id}.",
        "admin_purged_one": "Purged 1 dead letter.",
        "admin_purged_other": "Purged {count} dead letters.",
        "admin_dlq_empty": "No dead letters.",
        "comfyui_unavailable": "Sorry, the colorizer is unavailable right now. Please try again in a few minutes.",
        "cmd_colorize": "Colorize an old black-and-white photo",
        "cmd_colorize_image": "The photo to colorize",
        "cmd_colorize_mode": "How to colorize it (default: your /mode)",
        "cmd_colorize_private": "Only you see the answer",
        "cmd_colorize_menu": "Colorize photo",
        "photo_part": "Photo {index} of {count}: ",
        "received": "Got it — putting your photo in line…",
        "admin_retry_usage": "Use /retry <task_id>.",
        # Operations alerts to the admins' chats (ALERT_LANG).
        "alert_still": "(still) {message}",
        "alert_comfyui_down": "⚠️ Every ComfyUI instance is down ({count}). Tasks wait in the queue; nothing fails for it.",
        "alert_comfyui_back": "✅ ComfyUI is back: tasks run again.",
        "alert_queue_wait": "⚠️ The oldest task has waited {minutes} min (threshold {threshold} min). Add workers or GPUs, or check that workers run.",
        "alert_queue_wait_cleared": "✅ Tasks no longer wait longer than the threshold.",
        "alert_dead_letters_one": "⚠️ 1 new dead letter. See /dlq, then /retry or /purge_dlq.",
        "alert_dead_letters_other": "⚠️ {count} new dead letters. See /dlq, then /retry or /purge_dlq.",
        "alert_data_lost_one": "⚠️ Redis lost its data (restarted empty?): photos still waiting in line are gone and their users were not told; photos a worker held still come. Run Redis with AOF (appendfsync always). Seen by 1 process.",
        "alert_data_lost_other": "⚠️ Redis lost its data (restarted empty?): photos still waiting in line are gone and their users were not told; photos a worker held still come. Run Redis with AOF (appendfsync always). Seen by {count} processes.",
        "alert_bot_errors_one": "⚠️ The {platform} bot caught 1 error in its handlers (last: {last}). See its logs.",
        "alert_bot_errors_other": "⚠️ The {platform} bot caught {count} errors in its handlers (last: {last}). See its logs.",
    },
    "zh": {
        "not_an_image": "这似乎不是照片。请发送 JPEG、PNG、WEBP、BMP、TIFF 或 GIF 图片。",
        "unsupported_format": "无法识别这种图片格式。请发送 JPEG、PNG、WEBP、BMP、TIFF 或 GIF 图片。",
        "image_broken": "这个图片文件似乎已损坏。请重新导出后再发送。",
        "image_empty": "这个文件是空的。请重新发送照片。",
        "too_large": "文件超过 {max_mb} MB。请发送更小或压缩后的版本。",
        "too_many_pixels": "图片超过 {max_mp} 百万像素。请缩小后重新发送。",
        "too_many_active": "您已有 {limit} 张照片正在处理。请等待完成后再发送。",
        "rate_limited": "您本小时已发送 {limit} 张照片。请稍后再试。",
        "queue_full": "现在非常繁忙。请几分钟后再试。",
        "paused": "上色服务正在维护中暂停。请稍后再试。",
        "unknown_mode": "不认识这个模式。请选择：{modes}。",
        "bad_params": "不允许这些设置。请不带设置重新发送照片。",
        "comfyui_rejected": "抱歉，这张照片无法处理。请换一张照片或换一种模式。",
        "comfyui_failed": "抱歉，这张照片上色失败。请重试或选择另一种模式。",
        "model_unavailable": "抱歉，上色模型暂时无法使用，已通知管理员。请稍后再试。",
        "output_invalid": "抱歉，上色结果已损坏。请重试。",
        "timeout": "抱歉，这张照片处理时间过长。请稍后再试。",
        "too_many_attempts": "抱歉，这张照片多次处理失败，已通知管理员。请换一张试试。",
        "undeliverable": "抱歉，上色后的照片多次发送失败，已通知管理员。",
        "input_expired": "抱歉，您的照片在处理前已过期。请重新发送。",
        "output_expired": "抱歉，上色后的照片在送达前已过期。请重新发送。",
        "malformed_task": "抱歉，这个请求出了问题。请重新发送照片。",
        "internal": "抱歉，我们这边出了点问题。请重试。",
        "cancelled": "已取消。欢迎随时发送新照片。",
        "queued": "已排队 — 第 {position} 位，大约 {eta} 秒。",
        "queued_album": "已排队 {count} 张照片 — 第一张排第 {position} 位，大约 {eta} 秒。",
        "started": "正在上色…",
        "running": "正在上色… 已 {elapsed} 秒",
        "running_eta": "正在上色… 已 {elapsed} 秒，约需 {eta} 秒",
        "sending": "正在发送您的照片…",
        "queued_no_eta": "已排队 — 第 {position} 位。",
        "queued_album_no_eta": "已排队 {count} 张照片 — 第一张排第 {position} 位。",
        "progress": "正在上色… {percent}%",
        "retrying": "仍在处理 — 正在重试…",
        "done": "完成。",
        "result_caption": "已上色（{mode}），用时 {seconds} 秒（其中上色 {run} 秒）。",
        "result_caption_album": "{count} 张照片已上色（{mode}），用时 {seconds} 秒。",
        "album_buttons": "这些照片还可以（编号与相册顺序相同）：",
        "downscaled_note": "原图太大无法上传，这是缩小后的版本。",
        "button_cancel": "取消",
        "button_other_mode": "试试{mode}",
        "button_compare": "对比",
        "compare_caption": "上色前 / 上色后",
        "compare_before": "上色前",
        "compare_after": "上色后",
        "chart_title": "最近 {minutes} 分钟：完成 {done}，失败 {failed}，取消 {cancelled} · 用时 p50 {p50} 秒，p90 {p90} 秒",
        "chart_done": "完成",
        "chart_failed": "失败",
        "chart_cancelled": "取消",
        "chart_p50": "用时 p50",
        "chart_p90": "用时 p90",
        "chart_x": "分钟前",
        "chart_y": "每分钟完成的照片",
        "chart_run_time": "用时（秒）",
        "compare_unavailable": "抱歉，原始照片已不可用，无法对比。",
        "nothing_to_cancel": "您没有等待中的照片。",
        "cancelled_count_other": "已取消 {count} 张照片。",
        "mode_set": "您的默认模式已设为 {mode}。",
        "mode_usage": "您的默认模式是{mode}。可在下方选择其他模式，或使用 /mode <名称>（{modes}）。",
        "not_allowed": "抱歉，您无权执行此操作。",
        "not_yours": "这个按钮属于别人的照片。要为您自己的照片上色，请使用 /colorize 或直接发送照片。",
        "button_gone": "这个按钮已不再适用。",
        "other_mode_running": "{mode}模式的结果已在路上。",
        "other_mode_done": "这是{mode}模式的结果。",
        "button_retry": "重试",
        "admin_dlq_line": "{task}（{when} UTC）：{reason}",
        "admin_dlq_retry": "重试 {task}",
        "admin_stats": "最近 {minutes} 分钟：完成 {done}，失败 {failed}，取消 {cancelled}（每分钟 {per_min}）\n用时 p50 {p50} 秒，p90 {p90} 秒，p99 {p99} 秒",
        "admin_status_counts": "排队：{queued}   运行中：{running}   死信：{dead}",
        "admin_status_flow": "已暂停：{paused}   最久运行：{oldest} 秒   平均用时：{avg} 秒   待发送结果：{to_notify}",
        "admin_yes": "是",
        "admin_no": "否",
        "admin_status_waiting_other": "等待 {platform} 通知进程：{count} 个结果（没有运行中的通知进程带有它的发送器）",
        "admin_status_workers": "工作进程：",
        "admin_status_worker": "  {name}：手中 {pending} 个，空闲 {idle} 秒",
        "admin_status_no_workers": "工作进程：无",
        "admin_status_comfyui": "ComfyUI {url}：{health}，运行 {running}，等待 {waiting}",
        "admin_up": "正常",
        "admin_down": "宕机",
        "admin_mute_usage": "请使用 /mute_alerts <分钟>（0 表示重新开启提醒）。",
        "admin_muted": "提醒已静音 {minutes} 分钟。",
        "admin_unmuted": "提醒已重新开启。",
        "too_many_pixels_ceiling": "这张图片为 {width}×{height}（{mp} 百万像素），即使缩小也超过了 {max_mp} 百万像素的上限。请缩小后重新发送。",
        "shrunk_note": "您的图片为 {width}×{height}（{mp} 百万像素），超过上限，因此我将缩小到 {new_width}×{new_height}（{new_mp} 百万像素）的副本上色。",
        "backlog_waiting_other": "另有 {count} 张在等待您之前的照片，稍后会自动开始。",
        "backlog_only_other": "正在等待您之前的照片 — 这 {count} 张会自动开始。",
        "backlog_full_other": "已收下您 {sent} 张照片中的 {taken} 张；其余 {count} 张请在这些完成后重新发送。",
        "received_many": "收到 — 正在为您的 {count} 张照片排队…",
        "unknown_command": "不认识 {command}。发送照片即可上色，或试试 /help。",
        "where_none": "您没有等待中的照片。",
        "where_queued": "第 {index} 张：排第 {position} 位，大约 {eta} 秒。",
        "where_queued_no_eta": "第 {index} 张：排第 {position} 位。",
        "where_running": "第 {index} 张：正在上色。",
        "help_admin": "管理：/queue、/stats、/dlq、/retry <任务ID>、/purge_dlq、/pause、/resume、/mute_alerts <分钟>。",
        "cmd_where": "查看照片的排队位置",
        "cmd_start": "这个机器人能做什么",
        "cmd_help": "模式和限制",
        "cmd_mode": "查看或选择默认模式",
        "cmd_cancel": "取消等待中的照片",
        "cmd_admin": "管理 repairbot（仅限管理员）",
        "cmd_queue": "队列、工作进程和 ComfyUI 一览",
        "cmd_stats": "最近一小时的吞吐量和用时，附图表",
        "cmd_dlq": "最新的死信，附重试按钮",
        "cmd_retry": "重新排队一个死信任务",
        "cmd_retry_task": "任务 ID 或死信条目 ID",
        "cmd_purge": "删除所有死信",
        "cmd_purge_dlq": "删除所有死信",
        "cmd_pause": "停止开始新照片",
        "cmd_resume": "重新开始处理照片",
        "cmd_mute_alerts": "将运维提醒静音若干分钟（0 表示取消静音）",
        "cmd_mute_alerts_minutes": "静音多久；0 表示重新开启提醒",
        "start": "您好！发送一张黑白老照片，我会把它变成彩色的发回给您。",
        "help": (
            "发送一张黑白照片（以照片或文件形式发送可保留原始分辨率），我会为它上色。\n"
            "模式：\n{modes}\n可在说明文字中写模式名称，或用 /mode 设置默认模式。\n"
            "限制：每张图片最大 {max_mb} MB、{max_mp} 百万像素，同时最多 {active} 张，每小时 {hourly} 张。\n"
            "/cancel 取消您等待中的照片；/where 查看它们的排队位置。"
        ),
        "error_generic": "抱歉，出了点问题。请重试。",
        "admin_paused": "已暂停：不会开始新任务。",
        "admin_resumed": "已恢复。",
        "admin_retried": "任务 {task_id} 已重新排队。",
        "admin_retry_missing": "没有 {task_id} 的死信。",
        "admin_purged_other": "已清除 {count} 条死信。",
        "admin_dlq_empty": "没有死信。",
        "comfyui_unavailable": "抱歉，上色服务暂时不可用。请几分钟后再试。",
        "cmd_colorize": "为黑白老照片上色",
        "cmd_colorize_image": "要上色的照片",
        "cmd_colorize_mode": "上色方式（默认：您的 /mode 设置）",
        "cmd_colorize_private": "只有您能看到回复",
        "cmd_colorize_menu": "为照片上色",
        "photo_part": "第 {index}/{count} 张：",
        "received": "收到 — 正在为您的照片排队…",
        "admin_retry_usage": "请使用 /retry <任务ID>。",
        "alert_still": "（仍未解决）{message}",
        "alert_comfyui_down": "⚠️ 所有 ComfyUI 实例都已宕机（{count} 个）。任务在队列中等待，不会因此失败。",
        "alert_comfyui_back": "✅ ComfyUI 已恢复：任务重新开始运行。",
        "alert_queue_wait": "⚠️ 最早的任务已等待 {minutes} 分钟（阈值 {threshold} 分钟）。请增加 worker 或 GPU，或检查 worker 是否在运行。",
        "alert_queue_wait_cleared": "✅ 任务的等待时间已不再超过阈值。",
        "alert_dead_letters_other": "⚠️ 新增 {count} 条死信。请查看 /dlq，然后使用 /retry 或 /purge_dlq。",
        "alert_data_lost_other": "⚠️ Redis 丢失了数据（以空库重启？）：仍在排队的照片已丢失，其用户没有收到通知；worker 手中的照片仍会送达。请以 AOF 方式运行 Redis（appendfsync always）。发现此情况的进程：{count} 个。",
        "alert_bot_errors_other": "⚠️ {platform} 机器人的处理程序捕获了 {count} 个错误（最近一次：{last}）。请查看其日志。",
    },
}

LANGUAGES = tuple(CATALOG)
log = logging.getLogger(__name__)


def has(key: str) -> bool:
    """Whether `key` (or its plural forms) is in the English catalog."""
    return key in CATALOG["en"] or f"{key}_other" in CATALOG["en"]


def pick_lang(code: str | None) -> str:
    """Map a Telegram language_code or a Discord locale to a catalog language."""
    if code and code.lower().replace("_", "-").split("-")[0] == "zh":
        return "zh"
    return "en"


def _plural(key: str, table: dict[str, str], count: Any) -> str:
    """`key_one` for one where the language has it, else `key_other` (Chinese has no plural forms)."""
    if count == 1 and f"{key}_one" in table:
        return f"{key}_one"
    return f"{key}_other"


def text(key: str, lang: str | None = "en", **values: Any) -> str:
    """The sentence for `key` in `lang`, English when the language lacks it.

    A key with plural forms (`key_one`, `key_other`) picks one by `count`. A key missing from the
    catalog logs an error and shows the generic apology; tests/unit/test_catalog.py keeps that from
    reaching a user by checking every key the code uses.
    """
    table = CATALOG.get(pick_lang(lang), CATALOG["en"])
    if key not in CATALOG["en"] and f"{key}_other" in CATALOG["en"]:
        key = _plural(key, table if f"{key}_other" in table else CATALOG["en"], values.get("count"))
    template = table.get(key) or CATALOG["en"].get(key)
    if template is None:
        log.error("catalog has no text for %r", key)
        template = CATALOG["en"]["error_generic"]
    try:
        return template.format(**values)
    except (KeyError, IndexError):
        return template
