"""The DP mechanism on a tiny Llama: what clipping and noise must do, and what must be refused."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from framework.errors import InputError
from framework.losses import lm_loss
from privacy.engine import PrivateEngine, layer_report

V = 97


def tiny_llama(tied: bool = False, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=32,
                      tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg)


def batch(n: int, t: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (n, t), generator=torch.Generator().manual_seed(seed))


def plain_grads(model, x) -> list[torch.Tensor]:
    model.zero_grad()
    lm_loss(logits=model(input_ids=x).logits, input_ids=x).mean().backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_no_noise_and_no_clipping_equals_vanilla_training(mode):
    x = batch(6)
    vanilla, private = tiny_llama(), tiny_llama()
    # SGD: Adam's division by √v would amplify float rounding in near-zero gradient entries
    opt = torch.optim.SGD(vanilla.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        lm_loss(logits=vanilla(input_ids=x).logits, input_ids=x).mean().backward()
        opt.step()
    engine = PrivateEngine(private, torch.optim.SGD(private.parameters(), lr=0.5), noise_multiplier=0.0,
                           max_grad_norm=1e6, expected_batch_size=6, mode=mode)
    for _ in range(2):
        engine.step(x, physical_batch=4)  # two physical chunks: accumulation must not change the sum
    for (name, a), b in zip(vanilla.named_parameters(), private.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(vanilla.lm_head.weight, tiny_llama().lm_head.weight)  # it did train


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_each_clipped_per_sample_gradient_has_norm_min_of_norm_and_R(mode):
    model = tiny_llama()
    reference = copy.deepcopy(model)
    x = batch(5)
    norms = torch.stack([torch.sqrt(sum((g * g).sum() for g in plain_grads(reference, x[i:i + 1])))
                         for i in range(5)])
    R = float(norms.median())  # some samples are clipped, some are not
    engine = PrivateEngine(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=0.0,
                           max_grad_norm=R, expected_batch_size=1, mode=mode)
    torch.testing.assert_close(engine.per_sample_norms(x), norms, rtol=1e-4, atol=1e-6)
    for i in range(5):
        engine.gradient(x[i:i + 1])
        clipped = torch.sqrt(sum((p.grad * p.grad).sum() for p in model.parameters()))
        engine.optimizer.zero_grad(set_to_none=True)
        assert float(clipped) <= R * (1 + 1e-5)
        assert float(clipped) == pytest.approx(min(float(norms[i]), R), rel=1e-4)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_noise_on_zero_gradients_has_spread_sigma_R_over_B(mode):
    model = tiny_llama()
    sigma, R, B = 1.3, 0.7, 4
    engine = PrivateEngine(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=sigma,
                           max_grad_norm=R, expected_batch_size=B, mode=mode,
                           generator=torch.Generator().manual_seed(0))
    engine.gradient(batch(0))  # an empty Poisson batch: the update is noise alone
    noise = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert noise.numel() > 50_000
    assert float(noise.mean()) == pytest.approx(0.0, abs=4 * sigma * R / B / noise.numel() ** 0.5)
    assert float(noise.std()) == pytest.approx(sigma * R / B, rel=0.02)


def test_batchnorm_is_refused_by_name():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(InputError, match="BatchNorm"):
        PrivateEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
                      expected_batch_size=4, mode="hooks")


def test_tied_embeddings_are_refused_with_ghost_clipping_and_auto_picks_what_the_model_allows():
    model = tiny_llama(tied=True)
    with pytest.raises(InputError, match="lm_head.weight"):
        PrivateEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
                      expected_batch_size=4, mode="ghost")
    engine = PrivateEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                           max_grad_norm=1.0, expected_batch_size=4, mode="auto")
    assert engine.mode == "hooks"
    from privacy.engine import resolve_mode

    assert resolve_mode(tiny_llama(), "auto") == "bookkeeping"  # untied: alignplay's fast engine


def test_already_aggregated_gradients_are_refused():
    model = tiny_llama()
    x = batch(3)
    engine = PrivateEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                           max_grad_norm=1.0, expected_batch_size=3, mode="ghost")
    engine.module.disable_hooks()
    lm_loss(logits=model(input_ids=x).logits, input_ids=x).mean().backward()  # an ordinary backward: summed gradients
    engine.module.enable_hooks()
    with pytest.raises(InputError, match="already holds aggregated gradients"):
        engine.step(x)


def test_layer_report_names_the_functorch_fallback_layers():
    report = layer_report(tiny_llama(), "ghost")
    assert "lm_head" in report["ghost_norm"] and "model.embed_tokens" in report["ghost_norm"]
    assert any("LlamaRMSNorm" in name for name in report["functorch_fallback"])
