"""Which ``torch.onnx.export`` path keeps FCN's shapes dynamic: ``dynamo=True`` or the legacy TorchScript exporter?

Both export the same random-init FCN-ResNet50 traced at one size, then ONNX Runtime runs each file on sizes
and batch sizes different from the example. Printed per exporter: export time, the graph's input/output
dimensions, and per test shape the output shape and max |logit difference| against PyTorch. fcnseg uses
the exporter whose every row passes (``fcnseg.export`` docstring records the outcome).

    PYTHONPATH=src python benchmarks/compare_onnx_exporters.py --json benchmarks/results/onnx_exporters.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fcnseg.export import ExportModule  # noqa: E402
from fcnseg.models import fcn_resnet50  # noqa: E402

SHAPES = [(1, 64, 64), (2, 48, 80), (1, 37, 53), (3, 96, 40)]  # (N, H, W); the example is (2, 72, 88)


def export(module: ExportModule, path: Path, dynamo: bool) -> float:
    x = module.example_input(2, 72, 88)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
            torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=18, input_names=["input"],
                              output_names=["logits"], dynamic_shapes={"x": dims}, external_data=False)  # fmt: skip
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": axes, "logits": axes})  # fmt: skip
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import onnxruntime as ort

    torch.manual_seed(0)
    module = ExportModule(fcn_resnet50(num_classes=21, aux_loss=False))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, dynamo in (("dynamo=True", True), ("legacy (dynamo=False)", False)):
            path = Path(tmp) / f"{dynamo}.onnx"
            seconds = export(module, path, dynamo)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            row = {
                "export_s": round(seconds, 1),
                "input": sess.get_inputs()[0].shape,
                "output": sess.get_outputs()[0].shape,
                "shapes": [],
            }
            for n, h, w in SHAPES:
                x = torch.randn(n, 3, h, w)
                with torch.inference_mode():
                    ref = module(x).numpy()
                try:
                    out = sess.run(None, {"input": x.numpy()})[0]
                    ok = out.shape == ref.shape
                    diff = float(np.abs(out - ref).max()) if ok else None
                    row["shapes"].append({"input": [n, 3, h, w], "output": list(out.shape), "max_abs_diff": diff})
                except Exception as e:  # a fixed-size graph fails here
                    row["shapes"].append({"input": [n, 3, h, w], "error": str(e).splitlines()[0][:120]})
            rows[name] = row

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}")
    for name, row in rows.items():
        print(f"\n{name}: export {row['export_s']} s, input {row['input']}, output {row['output']}")
        for s in row["shapes"]:
            result = s.get("error") or f"output {s['output']}, max|d| {s['max_abs_diff']:.2e}"
            print(f"  {'x'.join(map(str, s['input'])):>12}  {result}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "results": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
