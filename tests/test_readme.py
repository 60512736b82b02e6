"""The README's Python example runs as written (with fewer steps and episodes)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_code(heading: str, what: str) -> str:
    """The first Python block after the README heading matching the regex ``heading``."""
    block = re.search(heading + r"\n\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, f"the README lost its {what}"
    return block.group(1)


def test_readme_python_example_runs(omniglot_root, monkeypatch, capsys):
    monkeypatch.setenv("INNERLOOP_DATA", str(omniglot_root))
    code = readme_code(r"## Using it from Python", "Python example")
    shortened = code.replace("range(500)", "range(20)").replace("num_episodes=1000", "num_episodes=40")
    assert shortened != code  # the knobs this test turns are still in the example
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(shortened, str(README), "exec"), namespace)
    assert namespace["logits"].shape == (75, 5)
    assert namespace["result"].num_episodes == 40 and namespace["result"].mean > 0.4  # chance: 0.2
    assert "%" in capsys.readouterr().out


def test_readme_gradient_example_runs(omniglot_root, monkeypatch):
    monkeypatch.setenv("INNERLOOP_DATA", str(omniglot_root))
    code = readme_code(r"### Gradient-based methods and the functional core", "gradient-based example")
    shortened = code.replace("range(100)", "range(2)").replace("sampler.sample(32,", "sampler.sample(2,")
    assert shortened.count("range(2)") == 1 and "sample(2," in shortened
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(shortened, str(README), "exec"), namespace)
    params, adapted = namespace["params"], namespace["adapted"]
    assert namespace["query_logits"].shape == (5, 5) and namespace["query_logits"].requires_grad
    for name, tensor in params.items():
        assert torch.equal(adapted[name], tensor) != name.startswith("head."), name


def test_readme_mamlpp_and_learned_optimizer_example_runs(capsys):
    code = readme_code(r"### MAML\+\+ and learned optimizers", "MAML++ / learned optimizer example")
    shortened = code.replace("meta_steps=300", "meta_steps=30")
    assert shortened != code
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(shortened, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "[0.2, 0.2, 0.2, 0.2, 0.2]"
    learned, adam = map(float, printed[1].split())
    start = float(namespace["problem"].loss(namespace["problem"].params, 0))
    assert learned < 0.2 * start and adam < 0.2 * start  # both optimize (30 meta-steps here)


def test_readme_metric_and_model_example_runs(omniglot_root, monkeypatch, capsys):
    monkeypatch.setenv("INNERLOOP_DATA", str(omniglot_root))
    code = readme_code(r"### Metric- and model-based methods", "metric / model-based example")
    shortened = code.replace("range(100)", "range(2)")
    assert shortened != code
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(shortened, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["relation", "r2d2", "snail"]
    assert all("transductive: False" in line and "support set" in line for line in printed)


def test_readme_probabilistic_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_code(r"### Probabilistic methods and calibrated uncertainty", "probabilistic example")
    shortened = code.replace("range(1000)", "range(60)").replace("FixedEpisodes(test, 200,", "FixedEpisodes(test, 30,")
    assert shortened.count("range(60)") == 1 and "FixedEpisodes(test, 30," in shortened
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(shortened, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["cnp", "dkt"]
    assert all("90% interval covers" in line for line in printed)
    assert (tmp_path / "gp-bands.png").stat().st_size > 20_000


def test_readme_intent_example_runs():
    code = readme_code(r"### Few-shot intent classification", "intent example")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["store"].images.shape == (13083, 384)
    assert 0.85 < float(namespace["accuracy"]) < 0.94


def test_readme_robustness_example_runs(omniglot_root, monkeypatch, capsys):
    """The robustness block, run after the Python example that defines its learner and test split."""
    monkeypatch.setenv("INNERLOOP_DATA", str(omniglot_root))
    setup = readme_code(r"## Using it from Python", "Python example")
    setup = setup.replace("range(500)", "range(5)").replace("num_episodes=1000", "num_episodes=4")
    code = readme_code(r"### Robustness: noisy, adversarial and imbalanced support sets", "robustness example")
    shortened = code.replace("num_episodes=600", "num_episodes=4").replace("steps=5)", "steps=1)")
    assert shortened.count("num_episodes=4") == 1 and "steps=1)" in shortened  # the knobs are still there
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(setup + "\n" + shortened, str(README), "exec"), namespace)
    labels = [condition.label for condition in namespace["conditions"]]
    assert labels[0] == "clean" and len(labels) == 5
    assert capsys.readouterr().out.count("%") >= 2 * 5


def test_readme_meta_rl_example_runs(capsys):
    code = readme_code(r"### Meta-reinforcement learning", "meta-RL example")
    shortened = (code.replace("range(3)", "range(1)").replace("sample_tasks(20,", "sample_tasks(2,")
                 .replace("episodes_per_task=20", "episodes_per_task=2").replace("sample_tasks(10,", "sample_tasks(2,"))
    assert shortened.count("episodes_per_task=2,") == 2 and "range(1)" in shortened
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(shortened, str(README), "exec"), namespace)
    assert namespace["returns"].shape == (2, 2) and torch.isfinite(namespace["returns"]).all()
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_readme_rl2_example_runs(capsys):
    code = readme_code(r"#### RL²", "RL² example")
    shortened = code.replace("range(150)", "range(2)").replace("sample_tasks(500,", "sample_tasks(7,")
    assert shortened.count("range(2)") == 1 and "sample_tasks(7," in shortened
    namespace: dict = {}
    exec(compile(shortened, str(README), "exec"), namespace)
    returns = namespace["returns"]
    assert returns.shape == (20, 7) and ((returns == 0) | (returns == 1)).all()  # one Bernoulli pull per episode
    assert "of 20 (random: 10)" in capsys.readouterr().out


def test_readme_bilevel_example_runs(capsys):
    code = readme_code(r"### Bilevel optimization: hyper-gradients for hyperparameters", "hyper-gradient example")
    shortened = code.replace("steps=100, warm_start", "steps=15, warm_start")
    assert shortened != code
    namespace: dict = {}
    exec(compile(shortened, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    gradients = [eval(line.split(maxsplit=1)[1]) for line in printed[:4]]  # noqa: S307 - our own printout
    assert [line.split()[0] for line in printed[:4]] == ["Unrolled", "Unrolled", "ImplicitCG", "ForwardMode"]
    for other in gradients[1:]:
        assert max(abs(a - b) for a, b in zip(gradients[0], other)) < 1e-3
    before, after = (float(value) for value in printed[4].replace("validation loss ", "").split(" -> "))
    assert after < before


def test_readme_automl_example_prints_what_the_readme_shows(capsys):
    code = readme_code(r"### Meta-learned priors for AutoML", "AutoML warm-start example")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()
    shown = re.search(r"prints:\n\n```\n(.*?)```", README.read_text().split("### Meta-learned priors for AutoML")[1],
                      re.S).group(1).strip().splitlines()
    assert printed == shown


def test_readme_online_example_runs(omniglot_root, monkeypatch, capsys):
    monkeypatch.setenv("INNERLOOP_DATA", str(omniglot_root))
    code = readme_code(r"### Online and continual meta-learning", "online meta-learning example")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    accuracy = eval(printed[0].split(":", 1)[1])  # noqa: S307 - our own printout: [mean, ci]
    forgetting = eval(printed[1].split(":", 1)[1])  # noqa: S307
    assert len(accuracy) == 2 and 0 <= accuracy[0] <= 1 and accuracy[1] >= 0
    assert len(forgetting) == 2 and -1 <= forgetting[0] <= 1
    assert namespace["summary"]["all_seen"]["final_seen_accuracy"] == accuracy


def test_readme_cactus_example_runs(omniglot_root, monkeypatch):
    monkeypatch.setenv("INNERLOOP_DATA", str(omniglot_root))
    code = readme_code(r"### Unsupervised meta-learning \(CACTUs\)", "CACTUs example")
    shortened = code.replace("partitions=5", "partitions=1").replace("clusters=500", "clusters=100")
    assert shortened.count("partitions=1") == 1 and "clusters=100" in shortened
    namespace: dict = {}
    exec(compile(shortened, str(README), "exec"), namespace)
    episodes = namespace["episodes"]
    assert episodes.support_x.shape == (16, 5, 1, 28, 28) and episodes.query_x.shape == (16, 25, 1, 28, 28)
    assert namespace["assignments"].shape == (1, 22000)
