"""A randomly initialised DDColor checkpoint, built with the node's own model class, for trying a real
ComfyUI where the hub can't be reached. Its colours are meaningless, but they are colours:

    var/comfyui/venv/bin/python tests/real_comfyui/make_random_checkpoint.py \\
        var/comfyui/ComfyUI/custom_nodes/ComfyUI-DDColor ./ddcolor_modelscope.pth
    repairbot comfyui install --weights ./ddcolor_modelscope.pth ...

ConvNeXt-L, as `ddcolor_modelscope.pth` (the modes' checkpoint) uses; pass convnext-t for the tiny one.
The last layer's a/b bias is set so the output is visibly coloured rather than grey.
"""

import sys
import time
import types

import torch


def main(node_dir: str, out: str, encoder: str = "convnext-l") -> None:
    package = types.ModuleType("ddcolor_node")  # the node's folder name has a hyphen: import it by path
    package.__path__ = [node_dir]
    sys.modules["ddcolor_node"] = package
    from ddcolor_node.ddcolor.ddcolor_arch import DDColor

    torch.manual_seed(0)
    started = time.time()
    model = DDColor(
        encoder_name=encoder,
        decoder_name="MultiScaleColorDecoder",
        input_size=[512, 512],
        num_output_channels=2,
        last_norm="Spectral",
        do_normalize=False,
        num_queries=100,
        num_scales=3,
        dec_layers=9,
    )  # the arguments kijai's nodes.py builds it with
    state = model.state_dict()
    for key in [k for k, v in state.items() if k.endswith("bias") and tuple(v.shape) == (2,)]:
        state[key] = torch.tensor([20.0, 35.0])
    torch.save({"params": state}, out)  # the node loads checkpoint["params"]
    print(f"{encoder}: {len(state)} tensors, saved {out} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
