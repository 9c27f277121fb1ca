"""Scheduler clamp, losses, checkpoint atomicity and head re-initialisation, config precedence, AMP checks."""
import argparse
import copy
import math
import os
import subprocess
import sys

import pytest
import torch

import network
from tests.conftest import ROOT
from utils.io.checkpoint import (CheckpointError, capture_rng_state, load_checkpoint, load_model_state,
                                 restore_rng_state, save_checkpoint)
from utils.config import parse_with_config
from utils.runtime.device import check_amp, cudnn_benchmark
from utils.loss import FocalLoss, build_criterion
from utils.scheduler import PolyLR, build_scheduler, retarget


def test_poly_lr_never_negative_past_max_iters():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = PolyLR(opt, max_iters=5, power=0.9)
    lrs = []
    for _ in range(12):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert all(isinstance(lr, float) and lr >= 1e-6 for lr in lrs)
    assert lrs[-1] == pytest.approx(1e-6)


def _stepped(policy: str, total_itrs: int, step_size: int, lr: float, weight_decay: float, steps: int):
    """An SGD optimizer (two groups, as main.py's: the backbone at 0.1x) and its scheduler after ``steps`` steps."""
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1 * lr},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr}],
                          lr=lr, weight_decay=weight_decay)
    sched = build_scheduler(opt, policy, total_itrs, step_size)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt, sched


@pytest.mark.parametrize("policy, old, new", [
    ("poly", (10, 0, 0.1, 1e-4), (40, 0, 0.1, 1e-4)),
    ("step", (100, 4, 0.1, 1e-4), (100, 2, 0.1, 1e-4)),
    ("poly", (10, 0, 0.1, 1e-4), (10, 0, 0.02, 5e-4)),
    ("step", (100, 4, 0.1, 1e-4), (100, 4, 0.3, 1e-4)),
    ("poly", (10, 0, 0.1, 1e-4), (10, 0, 0.1, 1e-4)),
])
def test_a_retargeted_resume_steps_with_the_new_settings_at_once(policy, old, new):
    """Resumed at iteration 6 with another --total_itrs (poly), --step_size (step), --lr or --weight_decay: the
    next step uses what the new settings give at iteration 6, as if they had been used from the start."""
    opt, sched = _stepped(policy, *old, steps=6)
    resumed_opt, resumed = _stepped(policy, *new, steps=0)
    resumed_opt.load_state_dict(opt.state_dict())
    resumed.load_state_dict(sched.state_dict())
    total_itrs, step_size, lr, weight_decay = new
    retarget(resumed, total_itrs, step_size, [0.1 * lr, lr], weight_decay)
    fresh_opt, fresh = _stepped(policy, *new, steps=6)
    for key in ("lr", "initial_lr", "weight_decay"):
        assert [g[key] for g in resumed_opt.param_groups] == pytest.approx([g[key] for g in fresh_opt.param_groups])
    assert resumed.get_last_lr() == pytest.approx(fresh.get_last_lr())
    for _ in range(3):
        for scheduler in (resumed, fresh):
            scheduler.optimizer.step()
            scheduler.step()
        assert resumed.get_last_lr() == pytest.approx(fresh.get_last_lr())


def test_focal_loss_ignores_void_and_matches_ce_at_gamma_0():
    logits = torch.randn(2, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    target[:, 0] = 255
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert FocalLoss()(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)  # gamma 0, as the original's
    assert FocalLoss(gamma=2.0)(logits, target).item() < ce.item()


def test_cross_entropy_is_the_mean_over_pixels_not_ignored():
    logits = torch.tensor([[[[0.0, math.log(3), 5.0]], [[0.0, 0.0, -5.0]]]])  # (1, 2 classes, 1, 3 pixels)
    target = torch.tensor([[[0, 1, 255]]], dtype=torch.uint8)  # any integer type, as the original's masks
    # pixel 0: -log(1/2) = log 2; pixel 1: -log(1/(3+1)) = 2 log 2; pixel 2 is ignored
    assert build_criterion("cross_entropy")(logits, target).item() == pytest.approx(1.5 * math.log(2))


@pytest.mark.parametrize("criterion", [build_criterion("cross_entropy"), build_criterion("focal_loss"),
                                       FocalLoss(gamma=0.5)], ids=["cross_entropy", "focal", "focal_gamma_0.5"])
def test_a_batch_with_every_pixel_ignored_gives_zero_loss_and_gradient(criterion):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = criterion(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_focal_gamma_0_is_cross_entropy_and_2_by_default():
    logits = torch.randn(2, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    target[:, 0] = 255
    ce = build_criterion("cross_entropy")(logits, target)
    assert torch.allclose(build_criterion("focal_loss", focal_gamma=0.0)(logits, target), ce, rtol=1e-6, atol=0)
    assert build_criterion("focal_loss").gamma == 2.0
    with pytest.raises(ValueError, match="gamma must be 0 or more"):
        build_criterion("focal_loss", focal_gamma=-1.0)


def test_focal_gamma_below_1_has_a_finite_gradient_on_certain_pixels():
    logits = torch.tensor([[[[100.0]], [[0.0]]]], requires_grad=True)  # class 0 with probability 1 in fp32
    FocalLoss(gamma=0.5)(logits, torch.zeros(1, 1, 1, dtype=torch.long)).backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_save_is_atomic_and_load_is_weights_only(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pth")
    save_checkpoint({"cur_itrs": 3, "model_state": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path)["cur_itrs"] == 3

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="disk full; the previous ck.pth is unchanged"):
        save_checkpoint({"cur_itrs": 4}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["cur_itrs"] == 3  # the old file is intact
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_unreadable_and_missing_checkpoints(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint .*bad.pth is not a PyTorch file"):
        load_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "none.pth"))


def test_a_checkpoint_under_a_path_that_is_not_utf8_loads(tmp_path):
    """main.py writes under any folder the system takes, so it must read back what it wrote there."""
    path = os.path.join(os.fsdecode(bytes(tmp_path) + b"/run \xff"), "latest.pth")
    os.mkdir(os.path.dirname(path))
    save_checkpoint({"cur_itrs": 3, "model_state": {"w": torch.ones(2)}}, path)
    for mmap in (False, True):  # main.py maps a checkpoint for a look at its settings
        loaded = load_checkpoint(path, mmap=mmap)
        assert loaded["cur_itrs"] == 3 and torch.equal(loaded["model_state"]["w"], torch.ones(2))


def test_a_run_saves_and_restores_the_random_state_of_its_own_gpu_alone(monkeypatch):
    """No GPU here: torch.cuda's state calls are replaced by ones that record them. A resume that sees fewer GPUs than
    the run it continues (torchrun left 8 visible, plain python one) must not ask for the state of a missing one."""
    calls = []

    def no_gpu(*args):
        raise AssertionError("a CPU run touched the GPU")
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", no_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", no_gpu)
    monkeypatch.setattr(torch.cuda, "get_rng_state", no_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state", no_gpu)
    state = capture_rng_state(torch.device("cpu"))
    assert "cuda" not in state
    restore_rng_state({**state, "cuda": torch.zeros(3, dtype=torch.uint8)}, torch.device("cpu"))

    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.full((3,), device.index, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value, device: calls.append((int(value[0]), device)))
    assert capture_rng_state(torch.device("cuda", 1))["cuda"].tolist() == [1, 1, 1]
    one_per_gpu = [torch.full((3,), i, dtype=torch.uint8) for i in range(8)]  # as versions before 9 December saved
    for cuda, device, expected in ((one_per_gpu, 3, 3), (one_per_gpu[:2], 3, 0), (one_per_gpu[5], 0, 5)):
        restore_rng_state({**state, "cuda": cuda}, torch.device("cuda", device))
        assert calls.pop() == (expected, torch.device("cuda", device))


def test_other_class_count_reinitialises_only_the_head():
    source = network.build_model("deeplabv3plus_mobilenet", 21, 16, pretrained_backbone=False)
    target = network.build_model("deeplabv3plus_mobilenet", 3, 16, pretrained_backbone=False)
    reinit = load_model_state(target, source.state_dict())
    assert reinit == ["classifier.classifier.3.weight", "classifier.classifier.3.bias"]
    assert torch.equal(target.state_dict()["classifier.aspp.project.0.weight"],
                       source.state_dict()["classifier.aspp.project.0.weight"])


def test_another_model_is_a_clear_error():
    source = network.build_model("deeplabv3_mobilenet", 21, 16, pretrained_backbone=False)
    target = network.build_model("deeplabv3plus_mobilenet", 21, 16, pretrained_backbone=False)
    with pytest.raises(CheckpointError, match="does not fit this model .*missing"):
        load_model_state(target, source.state_dict(), "x.pth")


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--model", default="a", choices=["a", "b"])
    return p


def test_config_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.5\nmodel: b\n")
    assert parse_with_config(_parser(), ["--config", str(cfg)]).lr == 0.5
    opts = parse_with_config(_parser(), ["--config", str(cfg), "--lr", "0.2"])
    assert opts.lr == 0.2 and opts.model == "b"


@pytest.mark.parametrize("text,message", [("lrr: 1\n", "unknown options"), ("model: c\n", "not one of")])
def test_config_errors(tmp_path, capsys, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit):
        parse_with_config(_parser(), ["--config", str(cfg)])
    assert message in capsys.readouterr().err


def test_amp_settings_that_cannot_run_say_what_to_use(monkeypatch):
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device; on the CPU use --amp auto"):
        check_amp(torch.device("cpu"), "fp16")
    # a T4 or V100: PyTorch says yes to bf16 only counting emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    with pytest.raises(ValueError, match="bfloat16 support.*use --amp fp16"):
        check_amp(torch.device("cuda"), "bf16")
    check_amp(torch.device("cuda"), "fp16")
    check_amp(torch.device("cpu"), "bf16")
    check_amp(torch.device("cpu"), "off")


def test_cudnn_benchmark_is_set_for_the_block_and_restored():
    previous = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        with pytest.raises(RuntimeError):
            with cudnn_benchmark(False):
                assert not torch.backends.cudnn.benchmark
                raise RuntimeError("restored even on errors")
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = previous


def test_sgd_is_fused_on_the_cpu_and_stays_fused_after_loading_another_state():
    """main.py's SGD updates in one fused kernel on the CPU, with the same result as the plain loop, and a
    checkpoint's optimizer state (the original's carries no 'fused' flag) changes only the state, not how it steps."""
    from utils.runtime.training import build_sgd, load_optimizer_state
    torch.manual_seed(0)
    start = [torch.randn(4, 3, 3, 3).contiguous(memory_format=torch.channels_last), torch.randn(4)]
    grads = [torch.randn_like(p) for p in start]

    def stepped(optimizer_for, steps=3):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = optimizer_for(params)
        for _ in range(steps):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
        return params, optimizer

    fused, optimizer = stepped(lambda ps: build_sgd([{"params": ps, "lr": 0.1}], 0.1, 1e-4, torch.device("cpu")))
    plain, plain_optimizer = stepped(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4))
    assert optimizer.param_groups[0]["fused"] is True
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b)
    saved = plain_optimizer.state_dict()
    for group in saved["param_groups"]:  # as the original's files: written before PyTorch had fused SGD
        group.pop("fused"), group.pop("foreach")
    load_optimizer_state(optimizer, saved)
    assert optimizer.param_groups[0]["fused"] is True
    torch.testing.assert_close(optimizer.state[optimizer.param_groups[0]["params"][0]]["momentum_buffer"],
                               plain_optimizer.state[plain_optimizer.param_groups[0]["params"][0]]["momentum_buffer"])


def test_a_loaded_state_without_momentum_for_some_parameters_still_steps_fused():
    """A parameter that had no gradient when the checkpoint was written has no momentum buffer in it; the fused step
    fails on such a mix, so it gets a zero one, and steps as plain SGD's first step would."""
    from utils.runtime.training import build_sgd, load_optimizer_state
    torch.manual_seed(0)
    start = [torch.randn(3, 2), torch.randn(5)]
    writer = [torch.nn.Parameter(p.clone()) for p in start]
    written = torch.optim.SGD(writer, lr=0.1, momentum=0.9)
    writer[0].grad = torch.ones_like(writer[0])  # only the first had a gradient
    written.step()
    results = []
    for optimizer_for in (lambda ps: build_sgd([{"params": ps}], 0.1, 0.0, torch.device("cpu")),
                          lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)):
        params = [torch.nn.Parameter(p.detach().clone()) for p in writer]
        optimizer = optimizer_for(params)
        load_optimizer_state(optimizer, copy.deepcopy(written.state_dict()))  # as read from a file: not shared
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        optimizer.step()
        results.append(params)
    for fused, plain in zip(*results):
        torch.testing.assert_close(fused, plain)


def _channels_last_and_flat_parameters():
    torch.manual_seed(0)
    return [torch.randn(8, 6, 3, 3).contiguous(memory_format=torch.channels_last),
            torch.randn(4, 6, 1, 1).contiguous(memory_format=torch.channels_last), torch.randn(8)]


@pytest.mark.parametrize("options", [dict(weight_decay=1e-4), dict(nesterov=True, maximize=True),
                                     dict(dampening=0.1)])  # dampening: torch.optim.SGD's own step
def test_memory_order_sgd_steps_as_torch_s_fused_sgd_without_copying_channels_last_tensors(options):
    """The views in memory order give torch.optim.SGD's numbers bit for bit, step after step, and the step copies no
    tensor (PyTorch's fused CPU kernel copies each channels_last one in and out of a contiguous buffer); momentum
    stays in the parameter's shape and layout, as a checkpoint holds it."""
    from torch.profiler import profile
    from utils.runtime.training import MemoryOrderSGD
    start = _channels_last_and_flat_parameters()
    stepped = []
    for optimizer_class in (MemoryOrderSGD, torch.optim.SGD):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = optimizer_class(params, lr=0.1, momentum=0.9, fused=True, **options)
        torch.manual_seed(1)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn_like(p)
            with profile() as prof:
                optimizer.step()
        stepped.append((params, optimizer, [event.name for event in prof.events()]))
    (ours, optimizer, events), (theirs, _, _) = stepped
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b) and a.stride() == b.stride()
    for p in ours:
        assert optimizer.state[p]["momentum_buffer"].shape == p.shape
    if "dampening" not in options:
        assert "aten::_fused_sgd_" in events and not {"aten::copy_", "aten::clone"} & set(events)
        assert all(optimizer.state[p]["momentum_buffer"].stride() == p.stride() for p in ours)


def test_nchw_momentum_and_gradients_for_channels_last_weights_step_as_the_plain_loop():
    """Momentum from an NCHW run (the original's checkpoint, a GPU run without channels_last) and gradients in
    another layout than their weights give the plain loop's numbers (PyTorch's fused kernel pairs elements by their
    place in memory, which mixes such tensors up); the momentum takes the weights' layout for the next steps."""
    from utils.runtime.training import build_sgd, load_optimizer_state
    start = _channels_last_and_flat_parameters()
    writer = [torch.nn.Parameter(p.contiguous()) for p in start]
    written = torch.optim.SGD(writer, lr=0.1, momentum=0.9)
    for p in writer:
        p.grad = torch.randn_like(p)
    written.step()
    stepped = []
    for optimizer_for in (lambda ps: build_sgd([{"params": ps}], 0.1, 1e-4, torch.device("cpu")),
                          lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=False)):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = optimizer_for(params)
        load_optimizer_state(optimizer, copy.deepcopy(written.state_dict()))
        torch.manual_seed(1)
        for _ in range(2):
            for p in params:
                p.grad = torch.randn(p.shape)  # NCHW-contiguous, whatever the weight's layout
            optimizer.step()
        stepped.append((params, optimizer))
    (ours, optimizer), (loop, loop_optimizer) = stepped
    for a, b in zip(ours, loop):  # close, not equal: the fused kernel's vector tails may round otherwise than the loop
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(optimizer.state[a]["momentum_buffer"], loop_optimizer.state[b]["momentum_buffer"])
        assert optimizer.state[a]["momentum_buffer"].stride() == a.stride() == a.grad.stride()


def test_a_parameter_memory_order_sgd_cannot_step_stops_the_step_before_any_parameter_changes():
    from utils.runtime.training import MemoryOrderSGD
    dense, strided = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4, 6)[:, ::2])
    optimizer = MemoryOrderSGD([{"params": [dense]}, {"params": [strided]}], lr=0.1, momentum=0.9, fused=True)
    dense.grad, strided.grad = torch.ones(3), torch.ones(4, 3)
    with pytest.raises(ValueError, match=r"without gaps or overlaps in memory; one of shape \(4, 3\) has strides"):
        optimizer.step()
    assert torch.equal(dense, torch.ones(3))


def test_memory_order_sgd_runs_each_step_hook_once_on_either_path():
    """Its step runs the optimizer's pre- and post-step hooks once, also where it falls back on torch.optim.SGD's
    step (dampening) after a plain SGD has been made (PyTorch then wraps that step in the hook runner too)."""
    from utils.runtime.training import MemoryOrderSGD
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for options in (dict(), dict(dampening=0.1)):
        param = torch.nn.Parameter(torch.ones(3))
        optimizer = MemoryOrderSGD([param], lr=0.1, momentum=0.9, fused=True, **options)
        calls = []
        optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
        optimizer.register_step_post_hook(lambda *_: calls.append("post"))
        param.grad = torch.ones(3)
        optimizer.step()
        assert calls == ["pre", "post"], options


def test_a_first_step_that_a_grad_scaler_skips_leaves_memory_order_sgd_s_momentum_at_zero():
    """fp16's GradScaler skips a step whose gradients are not finite. PyTorch's own fused SGD then keeps momentum
    buffers it never filled (PyTorch 2.14); MemoryOrderSGD's start at zero, so the next step is SGD's first."""
    from utils.runtime.training import MemoryOrderSGD
    results = []
    for optimizer_class, options in ((MemoryOrderSGD, dict(fused=True)), (torch.optim.SGD, dict(foreach=False))):
        param = torch.nn.Parameter(torch.ones(2, 3, 4, 4).contiguous(memory_format=torch.channels_last))
        optimizer = optimizer_class([param], lr=0.1, momentum=0.9, **options)
        scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
        for scale in (float("inf"), 1.0):
            scaler.scale((param * scale).sum()).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        results.append((param.detach().clone(), optimizer.state[param].get("momentum_buffer")))
    (ours, momentum), (loop, loop_momentum) = results
    assert torch.equal(ours, loop) and torch.equal(momentum, loop_momentum) and torch.isfinite(momentum).all()


STEPS_WITHOUT_DYNAMO = """
import sys
import torch
from utils.runtime.training import MemoryOrderSGD, build_sgd, load_optimizer_state, train_step
from utils.scheduler import build_scheduler
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 5, 1))
model.to(memory_format=torch.channels_last)
optimizer = build_sgd([{"params": model.parameters(), "lr": 0.1}], 0.1, 1e-4, torch.device("cpu"))
scheduler = build_scheduler(optimizer, "poly", 10, 5)
scaler = torch.amp.GradScaler("cpu", enabled=False)
for _ in range(2):
    train_step(model, optimizer, scaler, torch.nn.CrossEntropyLoss(), torch.randn(2, 3, 8, 8),
               torch.randint(0, 5, (2, 8, 8)), torch.device("cpu"), "bf16", True)
    scheduler.step()
load_optimizer_state(optimizer, optimizer.state_dict())
print(type(optimizer).__name__, "torch._dynamo" in sys.modules)
"""


def test_a_cpu_training_step_never_imports_torch_s_compiler():
    """torch.optim.Optimizer's set-up, zero_grad and state dicts import torch._dynamo (1.2 s) at their first call;
    main.py's SGD on the CPU skips those wrappers, so a one-process run that does not --compile never imports it
    (torchrun's DistributedDataParallel does)."""
    done = subprocess.run([sys.executable, "-c", STEPS_WITHOUT_DYNAMO], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["MemoryOrderSGD", "False"], done.stdout + done.stderr
