"""A model file holds weights, config, training result and data fingerprint in one file."""

from __future__ import annotations

import pytest
import torch

from digestlab.configs import GPTConfig
from digestlab.device import seed_everything
from digestlab.modelfile import ModelFileError, load_model, read_model_file, save_model
from digestlab.nn import GPT
from digestlab.train import TrainResult

RESULT = TrainResult(final_train_loss=1.5, val_loss=1.6, items_seen=100, items_per_s=10.0,
                     unit="tok", mfu=0.5, mfu_spec=None, peak_flops=1e9, wall_time_s=2.0,
                     loss_curve=[(0, 5.5), (1, 1.5)])


def saved_model(path, sha="a" * 64) -> GPT:
    seed_everything(0)
    model = GPT(GPTConfig(block_size=16, n_layer=2, d_model=32, n_heads=4, n_kv_heads=1,
                          head_dim=8, kv_share=2))
    save_model(path, model, RESULT, sha, {"experiment": "x"})
    return model


def test_saved_model_loads_with_the_same_config_weights_and_outputs(tmp_path):
    model = saved_model(tmp_path / "m.pt")
    loaded, rest = load_model(tmp_path / "m.pt", "a" * 64)
    assert loaded.config == model.config and not loaded.training
    idx = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)
    assert rest["train"]["loss_curve"] == [(0, 5.5), (1, 1.5)]
    assert rest["provenance"] == {"experiment": "x"} and rest["data_sha256"] == "a" * 64


def test_loading_refuses_a_model_file_of_other_data(tmp_path):
    saved_model(tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match="trained on data aaaaaaaaaaaa.*bbbbbbbbbbbb"):
        load_model(tmp_path / "m.pt", "b" * 64)


def test_a_file_that_is_not_a_model_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model file")
    with pytest.raises(ModelFileError, match="cannot be read as a model file"):
        read_model_file(tmp_path / "junk.pt")
    torch.save({"format": 99}, tmp_path / "future.pt")
    with pytest.raises(ModelFileError, match="not a model file of format 1"):
        read_model_file(tmp_path / "future.pt")
