"""Deploy a model: export it to ONNX or a `torch.export` program with its metadata (`quadranet.export`), and run it.

    quadranet.export(model, "model.onnx", input_size=(3, 32, 32))      # any model of the library, eval mode
    quadranet.deploy.export_run("results/runs/my_run", format="torch-export")  # a run, as `quadranet eval` builds it

Before tracing, a copy of the model is prepared for inference: eval mode, LoRA merged into its layer
(`convert.merge_lora`, exact), BatchNorm folded into the conv (or quadratic adapter) that feeds it, so the file
holds no BatchNorm the runtime would have to fuse. The trace is `torch.export`; the fused CPU kernels it records
as custom ops are replaced by their standard-op decompositions (`layers/decompositions.py`), and a custom op
without one stops the export, naming the op and the layer. ONNX goes through torch's dynamo exporter
(`torch.onnx.export(..., dynamo=True)`, onnxscript). Metadata (arch, input size, normalisation, class names,
config hash, git commits, what was merged and folded) is stored in the file: ONNX `metadata_props["quadranet"]`,
the torch.export archive's extra file `quadranet.json`; `read_metadata` reads either.

The quadratic adapter cannot be merged: its term P(A x * B x) is quadratic in x, and no linear layer equals it.
"""
from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..atomic import atomic_path
from ..convert import layer_shares, lora_adapters, merge_lora, replace_layer
from ..layers import AdapterLayer, LowRankAdapter, QuadraticAdapter
from ..layers.decompositions import decomposition_table, is_custom

FORMATS = ("onnx", "torch-export")
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}
METADATA_KEY = "quadranet"  # ONNX metadata_props key; the torch.export archive's extra file is METADATA_KEY.json
INPUT, OUTPUT = "input", "logits"


class ExportError(ValueError):
    """A model or run that cannot be exported; the message names the layer, op, file or value."""


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not supported; expected one of {list(FORMATS)}")
    return format


# ---- preparing the model: LoRA merged, BatchNorm folded ----


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with bn(y) = s * y + t per channel, in eval mode."""
    s = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.double()
    t = -bn.running_mean.double() * s
    if bn.bias is not None:
        t = t + bn.bias.double()
    return s, t


@torch.no_grad()
def _fold_into(producer: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Make `producer` compute bn(producer(x)): scale its output channels and shift its bias."""
    s, t = _bn_scale_shift(bn)
    conv = producer.primary if isinstance(producer, AdapterLayer) else producer
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(t)
    conv.weight.copy_((conv.weight.double() * s.view(shape)).to(conv.weight.dtype))
    new_bias = (bias * s + t).to(conv.weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)
    if isinstance(producer, QuadraticAdapter):  # the term is linear in its output projection P
        w = producer.quad_out.weight
        w.copy_((w.double() * s.view(shape)).to(w.dtype))
    elif isinstance(producer, LowRankAdapter):  # a LoRA adapter left unmerged: its term ends in B
        w = producer.lora_b.weight
        w.copy_((w.double() * s.view(shape)).to(w.dtype))


def _foldable_producer(m: nn.Module) -> bool:
    """A conv, or a conv's adapter whose added term ends in a linear projection (P, or LoRA's B)."""
    if isinstance(m, AdapterLayer):
        return isinstance(m.primary, nn.Conv2d) and isinstance(m, (QuadraticAdapter, LowRankAdapter))
    return isinstance(m, nn.Conv2d)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> int:
    """Fold every eval-mode BatchNorm2d whose input is the whole output of a conv (or a conv's adapter) into that
    layer, in place; returns how many. Pairs are found by running `example` once and matching the BatchNorm's
    input tensor to the layer's output tensor, so no architecture is assumed; a BatchNorm with an activation
    (timm's BatchNormAct2d) keeps its activation. The folded model is checked against the original on `example`
    (a conv output used elsewhere too would break the fold): where they differ, nothing is folded."""
    outputs, inputs, calls, hooks = {}, {}, {}, []
    producers = {n: m for n, m in model.named_modules() if n and _foldable_producer(m)}
    norms = {n: m for n, m in model.named_modules() if n and isinstance(m, nn.BatchNorm2d) and m.track_running_stats
             and m.running_mean is not None}
    if not norms:
        return 0
    skip = {id(m.primary) for m in producers.values() if isinstance(m, AdapterLayer)}
    def seen(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    # tensors are kept beside their ids, so that no other tensor can take an id during the forward
    def produced(m, args, out, name):
        outputs[id(out)] = (name, out)
        seen(name)

    def consumed(m, args, name):
        inputs[name] = (id(args[0]), args[0])
        seen(name)

    for name, m in producers.items():
        if id(m) not in skip:
            hooks.append(m.register_forward_hook(lambda m, a, out, n=name: produced(m, a, out, n)))
    for name, m in norms.items():
        hooks.append(m.register_forward_pre_hook(lambda m, a, n=name: consumed(m, a, n)))
    try:
        reference = model(example)
    finally:
        for h in hooks:
            h.remove()
    pairs = [(outputs[i][0], n) for n, (i, _) in inputs.items()
             if i in outputs and calls[n] == 1 and calls[outputs[i][0]] == 1]
    if not pairs:
        return 0
    folded = copy.deepcopy(model)
    for producer, norm in pairs:
        bn = folded.get_submodule(norm)
        _fold_into(folded.get_submodule(producer), bn)
        rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        replace_layer(folded, norm, nn.Sequential(*rest) if rest else nn.Identity())
    got = folded(example)
    if not torch.allclose(got, reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item()):
        warnings.warn("quadranet.export: folding BatchNorm changed the output (a conv output feeds more than its "
                      "BatchNorm?); exporting with BatchNorm unfolded", RuntimeWarning, stacklevel=2)
        return 0
    for name, child in folded.named_children():
        setattr(model, name, child)
    return len(pairs)


def prepare(model: nn.Module, example: torch.Tensor, fold_bn: bool = True) -> tuple[nn.Module, dict]:
    """(an inference copy of `model`: eval, float32, LoRA merged where it can be, BatchNorm folded; what was done)."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"expected a torch.nn.Module to export, got {type(model).__name__}")
    net = copy.deepcopy(model).cpu().float().eval().to(memory_format=torch.contiguous_format)
    lora = lora_adapters(net)
    unmerged = [n for n, a in lora if not a.mergeable]
    if unmerged:
        warnings.warn(f"quadranet.export: LoRA layers {unmerged[:3]} cannot merge (A's kernel/dilation do not fit "
                      f"the primary's taps); exported as primary + B A", RuntimeWarning, stacklevel=2)
    merged = len(lora) - len(unmerged)
    if merged:
        net = merge_lora(net, strict=False)
    info = {"lora_merged": merged, "lora_unmerged": len(unmerged),
            "quadratic_layers": sum(isinstance(m, QuadraticAdapter) for m in net.modules()),
            "batchnorm_folded": fold_batchnorm(net, example) if fold_bn else 0}
    return net, info


@torch.no_grad()
def quadratic_shares(model: nn.Module, batches) -> dict:
    """{layer name: RMS(quadratic term) / RMS(primary output)} of every QuadraticAdapter over the inputs `batches`."""
    return layer_shares(model, batches, (QuadraticAdapter,), empty=math.inf)


def prune_quadratic(model: nn.Module, batches, threshold: float) -> list[str]:
    """Replace each QuadraticAdapter whose quadratic share (`quadratic_shares` on `batches`) is below `threshold` by
    its primary layer, in place (`unquadratize` of those layers): its term is dropped, so the model changes by up to
    that share there. Returns the names of the layers pruned."""
    if not threshold >= 0:
        raise ValueError(f"threshold={threshold!r} must be a number >= 0")
    shares = quadratic_shares(model, batches)
    pruned = [n for n, s in shares.items() if s < threshold]
    for name in pruned:
        replace_layer(model, name, model.get_submodule(name).primary)
    return pruned


# ---- tracing and writing ----


def _layer_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else "?"


def trace(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """`torch.export` of `model` on `example`, every custom op replaced by its decomposition; ExportError naming the
    op and the layer of one that has none."""
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with torch.no_grad():
        ep = torch.export.export(model, (example,), dynamic_shapes=dynamic, strict=False)
    table = decomposition_table()
    if any(is_custom(n.target) for n in ep.graph.nodes if n.op == "call_function"):
        ep = ep.run_decompositions(table)
    left = [(str(n.target), _layer_of(n)) for n in ep.graph.nodes if n.op == "call_function" and is_custom(n.target)]
    if left:
        op, layer = left[0]
        raise ExportError(f"layer {layer!r} runs custom op {op}, which has no export decomposition; register one "
                          f"with quadranet.layers.decompositions.register_decomposition")
    return ep


def _git_commit() -> Optional[str]:
    from ..run.accounting import git

    return git("rev-parse", "HEAD")


def export(model: nn.Module, out: Union[str, Path], format: str = "onnx", *, input_size: Sequence[int] = (3, 224, 224),
           batch: int = 1, dynamic_batch: bool = False, metadata: Optional[dict] = None, fold_bn: bool = True,
           opset: Optional[int] = None) -> Path:
    """Export `model` (any model of the library: first-order, quadratized, LoRA, QuadraNet V1) to `out`.

    format: "onnx" or "torch-export" (a `torch.export.save` archive, .pt2). The graph takes float32 images of
    (batch, *input_size); `dynamic_batch` makes the batch dimension symbolic. `metadata` (JSON-serialisable) is
    stored in the file beside what the export adds (format, input shape, merged and folded layers, versions)."""
    from .. import __version__

    check_format(format)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch={batch!r} must be a positive integer")
    if len(input_size) != 3 or any(int(v) < 1 for v in input_size):
        raise ExportError(f"input_size={tuple(input_size)!r} must be (channels, height, width)")
    # a dynamic batch is traced at 2 or more: torch.export specialises a dimension of size 1
    example = torch.randn(max(batch, 2) if dynamic_batch else batch, *input_size)
    net, info = prepare(model, example, fold_bn=fold_bn)
    ep = trace(net, example, dynamic_batch)
    meta = {"format": format, "input_shape": [None if dynamic_batch else batch, *map(int, input_size)],
            "input_name": INPUT, "output_name": OUTPUT, **info, "quadranet_version": __version__,
            "torch": torch.__version__, "export_git_commit": _git_commit(), **(metadata or {})}
    out = Path(out)
    with atomic_path(out) as tmp:  # written completely or not at all
        if format == "torch-export":
            with open(tmp, "wb") as f:  # a buffer: torch.export.save warns about a path not ending in .pt2
                torch.export.save(ep, f, extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
        else:
            program = torch.onnx.export(ep, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                        opset_version=opset, verbose=False)
            program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
            program.save(str(tmp))
    return out


def read_metadata(path: Union[str, Path]) -> dict:
    """The metadata `export` stored in an .onnx file or a torch.export archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a file written by quadranet export")
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if METADATA_KEY not in props:
            raise ExportError(f"{path} holds no {METADATA_KEY!r} metadata; was it written by quadranet export?")
        return json.loads(props[METADATA_KEY])
    extra = {f"{METADATA_KEY}.json": ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[f"{METADATA_KEY}.json"])


# ---- running an exported file ----


PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def onnx_session(path: Union[str, Path], device: str = "cpu", threads: Optional[int] = None):
    """An ONNX Runtime session of `path` on `device` ("cpu", or "cuda": the CUDA execution provider, which needs
    the onnxruntime-gpu package and a GPU; ExportError saying so otherwise). `threads`: intra-op threads
    (default torch's, so that eager and the runtime are compared on the same cores)."""
    import onnxruntime as ort

    if device not in PROVIDERS:
        raise ExportError(f"device={device!r} is not supported; expected one of {list(PROVIDERS)}")
    if PROVIDERS[device][0] not in ort.get_available_providers():
        raise ExportError(f"ONNX Runtime has no {PROVIDERS[device][0]} here (available: "
                          f"{ort.get_available_providers()}); install onnxruntime-gpu on a machine with a GPU")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    # no busy-waiting between runs: eager PyTorch and other runtimes taking turns in one process need the cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=PROVIDERS[device])


def load(path: Union[str, Path], device: str = "cpu"):
    """A callable mapping a float32 image batch (torch tensor) to logits (torch tensor), from an .onnx file
    (ONNX Runtime) or a torch.export archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a file written by quadranet export")
    if path.suffix == ".onnx":
        session = onnx_session(path, device)
        name = session.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.detach().cpu().float().contiguous().numpy()})[0])
        return run
    module = torch.export.load(str(path)).module()

    def run_program(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x.float().contiguous())
    return run_program


# ---- a finished run ----


def run_model(run: Union[str, Path]) -> tuple[nn.Module, object, dict]:
    """(the model of run folder `run`, built as `quadranet eval` builds it, with its weights; its config; the
    metadata of its deployment: arch, method, input size, normalisation, class names, config hash, commit)."""
    from safetensors.torch import load_file

    from ..classify.config import config_hash, load_config
    from ..classify.data import num_classes
    from ..classify.model import build_structure
    from ..run import WEIGHTS

    run = Path(run)
    for name in ("config.yaml", WEIGHTS):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} not found; expected the --out folder of a finished "
                                    f"quadranet train run")
    cfg = load_config(run / "config.yaml")
    model = build_structure(cfg, num_classes(cfg))
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    model.eval()
    metrics = {}
    if (run / "metrics.json").is_file():
        metrics = json.loads((run / "metrics.json").read_text())
    d = cfg.data
    mean = std = None
    if d.normalize == "model":
        pc = getattr(model, "pretrained_cfg", {}) or {}
        mean, std = list(pc.get("mean", (0.5,))), list(pc.get("std", (0.5,)))
        if d.dataset == "fashion_mnist" and d.channels == 1:
            mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    names = None
    if d.dataset == "fashion_mnist":
        from ..data.fashion_mnist import CLASSES

        names = [CLASSES[c] for c in (d.classes or range(len(CLASSES)))]
    meta = {"arch": cfg.model.arch, "method": cfg.method, "quadratic": bool(cfg.model.quadratic),
            "input_size": [d.channels, d.resolution, d.resolution], "mean": mean, "std": std,
            "normalize": d.normalize, "dataset": d.dataset, "class_names": names, "num_classes": num_classes(cfg),
            "config_hash": config_hash(cfg), "git_commit": metrics.get("provenance", {}).get("git_commit"),
            "run": str(run), "acc1": metrics.get("acc1")}
    return model, cfg, meta


def export_run(run: Union[str, Path], out: Union[str, Path, None] = None, format: str = "onnx", batch: int = 1,
               dynamic_batch: bool = False, opset: Optional[int] = None, prune: Optional[float] = None,
               prune_images: int = 256) -> Path:
    """Export the model of finished run folder `run` (default `out`: <run>/model.onnx or model.pt2). With `prune`,
    first drop the quadratic term of every layer whose share (`quadratic_shares`, on the run's first
    `prune_images` training images) is below `prune` (`prune_quadratic`); the metadata names the layers."""
    check_format(format)
    model, cfg, meta = run_model(run)
    if prune is not None:
        from ..classify.data import build_datasets

        if isinstance(prune_images, bool) or not isinstance(prune_images, int) or prune_images < 1:
            raise ExportError(f"prune_images={prune_images!r} must be a positive integer")
        train_set, _ = build_datasets(cfg, model)
        n = min(prune_images, len(train_set))
        batches = [train_set.batch(range(i, min(i + 64, n)))[0] for i in range(0, n, 64)]
        layers = sum(isinstance(m, QuadraticAdapter) for m in model.modules())
        pruned = prune_quadratic(model, batches, prune)
        meta = {**meta, "prune": {"threshold": prune, "measured_on_train_images": n, "quadratic_layers_before":
                                  layers, "pruned": pruned}}
    out = Path(out) if out is not None else Path(run) / f"model{SUFFIX[format]}"
    return export(model, out, format, input_size=meta["input_size"], batch=batch, dynamic_batch=dynamic_batch,
                  metadata=meta, opset=opset)


@torch.no_grad()
def check_run(run: Union[str, Path], path: Union[str, Path], limit: Optional[int] = 512, batch: int = 256,
              device: str = "cpu") -> dict:
    """Logits of exported file `path` against the eager model of `run` on the run's own evaluation images:
    {"images", "max_rel_error" (max |a - b| / max |b| per batch), "top1_agree", "acc1_eager", "acc1_exported"}."""
    from ..classify.data import build_datasets

    model, cfg, _ = run_model(run)
    meta = read_metadata(path)
    _, eval_set = build_datasets(cfg, model)
    fixed = meta["input_shape"][0]
    step = fixed if fixed is not None else batch
    exported = load(path, device)
    n = len(eval_set) if limit is None else min(limit, len(eval_set))
    err, agree, right_e, right_x = 0.0, 0, 0, 0
    for start in range(0, n - n % step if fixed else n, step):
        x, y = eval_set.batch(range(start, min(start + step, n)))
        ref, got = model(x), exported(x)
        err = max(err, float((got - ref).abs().max() / ref.abs().max()))
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        right_e += int((ref.argmax(1) == y).sum())
        right_x += int((got.argmax(1) == y).sum())
    images = n - n % step if fixed else n
    if images == 0:
        raise ExportError(f"{path} takes batches of {fixed}, more than the {n} evaluation images checked")
    return {"images": images, "max_rel_error": err, "top1_agree": agree / images,
            "acc1_eager": 100 * right_e / images, "acc1_exported": 100 * right_x / images}
