"""LoRA through PEFT: what trains, adapter checkpoints, merge-lora, loading base + adapters."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pi0_ros.cli import main as cli_main
from pi0_ros.training.model_setup import build_model
from pi0_ros.training.train import train

SIGLIP = "paligemma_with_expert.paligemma.model.vision_tower."


@pytest.fixture(scope="module")
def lora_run(train_datasets, tiny_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    cfg = tiny_cfg(train_datasets, out, lora=True, lora_rank=4, lora_alpha=8.0, lora_expert_rank=8,
                         lora_expert_alpha=8.0, lr=1e-2)
    return cfg, train(cfg)


def test_lora_trains_adapters_and_heads_only(lora_run):
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.training.lora import is_adapter_dir, read_meta

    cfg, s = lora_run
    ckpt = cfg.out + "/checkpoints/step_000003"
    assert is_adapter_dir(ckpt) and s["checkpoint"] == ckpt
    assert read_meta(ckpt)["base"] == "../../base"  # relative: the run directory can move
    # The base written at the start is the untouched initial model.
    init, _ = build_model(cfg, torch.device("cpu"))
    base = load_checkpoint(cfg.out + "/base").state_dict()
    for k, v in init.state_dict().items():
        assert torch.equal(base[k], v), k
    adapters = load_file(ckpt + "/adapter_model.safetensors")
    lora_keys = [k for k in adapters if ".lora_A." in k or ".lora_B." in k]
    head_keys = [k for k in adapters if k not in lora_keys]
    assert lora_keys and not any(SIGLIP in k for k in adapters)  # vision tower frozen, no adapters
    assert {k.split(".")[2] for k in head_keys} <= {"state_proj", "action_in_proj", "action_time_mlp_in",
                                                   "action_time_mlp_out", "action_out_proj"}
    assert any("gemma_expert" in k for k in lora_keys) and any("language_model" in k for k in lora_keys)
    # Expert adapters have the expert rank, VLM ones the VLM rank.
    a_exp = next(v for k, v in adapters.items() if "gemma_expert" in k and "q_proj.lora_A" in k)
    a_vlm = next(v for k, v in adapters.items() if "language_model" in k and "q_proj.lora_A" in k)
    assert a_exp.shape[0] == 8 and a_vlm.shape[0] == 4
    # Training moved the adapters off PEFT's zero init of B.
    assert any(float(v.abs().max()) > 0 for k, v in adapters.items() if ".lora_B." in k)
    assert s["trainable_parameters"] == sum(v.numel() for v in adapters.values())
    assert s["trainable_parameters"] < 0.2 * s["parameters"]


def test_merged_equals_unmerged_and_loads_without_peft(lora_run, tmp_path):
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.model.inputs import ModelInputs
    from pi0_ros.policy import Policy
    from pi0_ros.training.lora import load_lora_model

    cfg, _ = lora_run
    ckpt = cfg.out + "/checkpoints/step_000003"
    unmerged = load_lora_model(ckpt, merge=False)
    merged = load_lora_model(ckpt)
    g = torch.Generator().manual_seed(0)
    B = 2
    inp = ModelInputs(images=torch.rand(B, 2, 3, 224, 224, generator=g) * 2 - 1,
                      image_masks=torch.ones(B, 2, dtype=torch.bool), tokens=torch.randint(0, 1000, (B, 48), generator=g),
                      token_masks=torch.ones(B, 48, dtype=torch.bool), state=torch.randn(B, 32, generator=g))
    noise = torch.randn(B, 4, 32, generator=g)
    with torch.no_grad():
        a = unmerged.get_base_model().sample_actions(inp, noise=noise)
        b = merged.sample_actions(inp, noise=noise)
        base = load_checkpoint(cfg.out + "/base").sample_actions(inp, noise=noise)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert float((b - base).abs().max()) > 1e-3  # the adapters and heads change the output

    out = tmp_path / "merged"
    assert cli_main(["merge-lora", ckpt, "--out", str(out)]) == 0
    # base + adapters through Policy (what the policy node does with an adapter directory) ...
    direct = Policy.from_checkpoint(ckpt)
    obs = direct.dummy_input("pick up the red cube")
    zero = np.zeros((4, 32), dtype=np.float32)
    want = direct.infer(obs, noise=zero).actions
    # ... equals the merged checkpoint, loaded in a process where PEFT cannot be imported.
    code = ("import sys, json, numpy as np; sys.modules['peft'] = None\n"
            "from pi0_ros.policy import Policy\n"
            f"p = Policy.from_checkpoint({str(out)!r})\n"
            "o = p.infer(p.dummy_input('pick up the red cube'), noise=np.zeros((4, 32), dtype=np.float32))\n"
            "print(json.dumps(o.actions.tolist()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    np.testing.assert_allclose(np.array(json.loads(res.stdout.strip().splitlines()[-1])), want, rtol=1e-4, atol=1e-5)


def test_lora_flags_from_the_cli(train_datasets, tiny_cfg, tmp_path):
    out = tmp_path / "cli"
    rc = cli_main(["train", "--dataset", train_datasets[0], "--preset", "tiny", "--out", str(out), "--steps", "1",
                   "--batch-size", "2", "--chunk-size", "4", "--num-cameras", "2", "--warmup", "1", "--lora",
                   "--lora-rank", "2", "--lora-alpha", "4", "--lora-expert-rank", "6", "--lora-expert-alpha", "3",
                   "--lora-targets", "q_proj,v_proj"])
    assert rc == 0
    ckpt = out / "checkpoints" / "step_000001"
    conf = json.loads((ckpt / "adapter_config.json").read_text())  # PEFT's own file
    assert conf["r"] == 2 and conf["lora_alpha"] == 4
    assert list(conf["rank_pattern"].values()) == [6] and list(conf["alpha_pattern"].values()) == [3]
    keys = load_file(str(ckpt / "adapter_model.safetensors")).keys()
    lora = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in keys if ".lora_" in k}
    assert lora == {"q_proj", "v_proj"}
    with pytest.raises(ValueError, match="LoRA targets"):
        train(tiny_cfg(train_datasets, tmp_path / "bad", lora=True, lora_targets=("fc1",)))


def test_lora_in_bf16_with_grad_checkpoint(train_datasets, tiny_cfg, tmp_path):
    """openpi's low-memory recipe as `bench train --lora` runs it: bf16 base, fp32 adapters."""
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.policy import Policy

    cfg = tiny_cfg(train_datasets, tmp_path / "bf16", steps=2, lora=True, precision="bf16", grad_checkpoint=True)
    s = train(cfg)
    assert np.isfinite(s["losses"]).all()
    base = load_checkpoint(tmp_path / "bf16" / "base")
    assert base.config.dtype == "bfloat16"
    assert base.vlm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    adapters = load_file(s["checkpoint"] + "/adapter_model.safetensors")
    assert all(v.dtype == torch.float32 for v in adapters.values())  # the trained weights stay fp32
    policy = Policy.from_checkpoint(s["checkpoint"], dtype="float32")
    out = policy.infer(policy.dummy_input("pick up the red cube"), noise=np.zeros((4, 32), dtype=np.float32))
    assert np.isfinite(out.actions).all()


def test_merge_lora_keeps_the_adapters_inference_settings_and_training_writes_none(lora_run, tmp_path):
    """Training cannot know how a checkpoint does closed loop: it writes no inference.json. One put
    beside an adapter after validating it carries over to the merged checkpoint (checked)."""
    import shutil

    from pi0_ros import inference_settings as isettings
    from pi0_ros.training.merge_lora import merge_lora

    cfg, _ = lora_run
    ckpt = Path(cfg.out) / "checkpoints" / "step_000003"
    assert not list(Path(cfg.out).rglob(isettings.FILENAME))
    (tmp_path / "plain").mkdir()
    isettings.write(tmp_path / "plain", {"noise_scale": 0.5})   # left by an earlier merge of other weights
    assert not (merge_lora(ckpt, tmp_path / "plain") / isettings.FILENAME).exists()
    adapter = tmp_path / "adapter"
    shutil.copytree(ckpt, adapter)
    isettings.write(adapter, {"realtime_chunking": True, "noise_scale": 0.0}, validated={"episodes": 2})
    merged = merge_lora(adapter, tmp_path / "merged", base=Path(cfg.out) / "base")
    assert isettings.load(merged).values == {"realtime_chunking": True, "noise_scale": 0.0}
    assert isettings.load(merged).validated == {"episodes": 2}
    (adapter / isettings.FILENAME).write_text('{"noise_scale": 3}')
    with pytest.raises(ValueError, match="noise_scale must be"):
        merge_lora(adapter, tmp_path / "bad", base=Path(cfg.out) / "base")
    assert not (tmp_path / "bad").exists()                     # refused before writing anything


def test_expert_only_adapters_continue_in_a_later_stage(train_datasets, tiny_cfg, tmp_path):
    """--lora --freeze-vlm: adapters on the action expert only. --init ADAPTER_DIR: the next stage
    starts from that adapter (same base, its adapters and heads), or from it merged (full fine-tune)."""
    from pi0_ros.model.checkpoint import load_checkpoint
    from pi0_ros.policy import Policy
    from pi0_ros.training.lora import base_path, load_lora_model

    def from_ckpt(datasets, out, init, **kw):  # --init: the checkpoint keeps its chunk size and cameras
        return tiny_cfg(datasets, tmp_path / out, preset=None, init=init, chunk_size=None, num_cameras=None, **kw)

    s1 = train(tiny_cfg(train_datasets, tmp_path / "s1", steps=2, lora=True, freeze_vlm=True, lr=1e-2))
    a1 = load_file(s1["checkpoint"] + "/adapter_model.safetensors")
    assert any("gemma_expert" in k for k in a1) and not any("language_model" in k or "vision" in k for k in a1)
    assert any(".lora_B." in k and float(v.abs().max()) > 0 for k, v in a1.items())
    assert s1["peak_rss_gb"] > 0.1 and s1["train_time_s"] > 0

    # Stage 2 (same data, so the same norm stats), adapters on both stacks, lr 0: its checkpoint shows where
    # it started.
    s2 = train(from_ckpt(train_datasets, "s2", s1["checkpoint"], steps=1, lora=True, lr=0.0))
    a2 = load_file(s2["checkpoint"] + "/adapter_model.safetensors")
    assert 0 < s1["trainable_parameters"] < s2["trainable_parameters"] == sum(v.numel() for v in a2.values())
    for k, v in a1.items():
        torch.testing.assert_close(a2[k], v, rtol=0, atol=0, msg=k)
    vlm_b = [v for k, v in a2.items() if "language_model" in k and ".lora_B." in k]
    assert vlm_b and all(float(v.abs().max()) == 0 for v in vlm_b)  # new VLM adapters: PEFT's zero init
    assert base_path(s2["checkpoint"]) == base_path(s1["checkpoint"]) == (tmp_path / "s1" / "base").resolve()
    p1, p2 = Policy.from_checkpoint(s1["checkpoint"]), Policy.from_checkpoint(s2["checkpoint"])
    obs, zero = p1.dummy_input("pick up the red cube"), np.zeros((4, 32), dtype=np.float32)
    np.testing.assert_allclose(p2.infer(obs, noise=zero).actions, p1.infer(obs, noise=zero).actions, rtol=0, atol=1e-6)

    # An adapter with VLM weights cannot continue as expert-only: nothing is dropped silently.
    with pytest.raises(ValueError, match="no place"):
        train(from_ckpt(train_datasets, "bad", s2["checkpoint"], steps=1, lora=True, freeze_vlm=True))
    # Without --lora, --init ADAPTER_DIR fine-tunes base + adapters merged.
    s3 = train(from_ckpt(train_datasets, "s3", s1["checkpoint"], steps=1, lr=0.0))
    merged = load_lora_model(s1["checkpoint"]).state_dict()
    full = load_checkpoint(s3["checkpoint"]).state_dict()
    assert merged.keys() == full.keys()
    for k in merged:
        torch.testing.assert_close(full[k], merged[k], rtol=0, atol=0, msg=k)
