"""The Discord bot: /colorize, the "Colorize photo" message menu, /repairbot admin commands, and the
sender that delivers results. Always import the library as `discord` (absolute): this package is
`bots.discord` and never shadows it."""
