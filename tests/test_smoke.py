from fcn_research.train import train


def test_train_default(make_cfg):
    cfg = make_cfg()
    assert cfg.hydra.runtime.choices.activation == "relu"
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["hparams"]["activation"] == "relu"
