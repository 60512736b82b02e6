"""Memory addressing of the MANN on hand-made sequences, SNAIL's shared-support path against plain
sequences, the in-context transformer's mask, LEO's regularizers and meta-gradient."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from innerloop.algorithms import LEO, SNAIL, MemoryAugmentedNetwork
from innerloop.algorithms.model.in_context_transformer import support_and_self_mask
from innerloop.algorithms.model.leo import decoder_orthogonality, gaussian_kl_to_standard
from innerloop.algorithms.model.mann import accuracy_by_presentation, cosine_read_weights, least_used, lru_write
from innerloop.nn import Conv4
from innerloop.tasks import Episodes


def test_least_used_marks_the_smallest_usages_and_breaks_ties_by_index():
    usage = torch.tensor([[0.5, 0.1, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(least_used(usage, 1), torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))
    assert torch.equal(least_used(usage, 2), torch.tensor([[0.0, 1, 0, 1], [1, 1, 0, 0]]))


def test_lru_write_on_a_hand_made_memory():
    """Slot 0 was read last step; slot 1 is least used; the gate 0.25 splits the write 1:3."""
    memory = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    key = torch.tensor([[[0.4, -0.8]]])
    gate = torch.tensor([[[0.25]]])
    previous_read = torch.tensor([[[1.0, 0.0, 0.0]]])
    usage = torch.tensor([[0.5, 0.1, 0.9]])
    new_memory, write_weights = lru_write(memory, key, gate, previous_read, least_used(usage, 1), usage)
    assert torch.allclose(write_weights, torch.tensor([[[0.25, 0.75, 0.0]]]))
    expected = torch.tensor([[[1.0 + 0.1, -0.2], [0.3, -0.6], [3.0, 3.0]]])  # slot 1 was cleared first
    assert torch.allclose(new_memory, expected)


def test_reads_are_a_softmax_of_cosine_similarities():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    key = torch.tensor([[[0.0, 5.0]]])
    cosines = torch.tensor([0.0, 1.0, 1 / math.sqrt(2)])
    assert torch.allclose(cosine_read_weights(key, memory)[0, 0], torch.softmax(cosines, 0))


def small_mann() -> MemoryAugmentedNetwork:
    torch.manual_seed(0)
    return MemoryAugmentedNetwork(Conv4(hidden_channels=4, image_size=16), ways=3, controller_size=8,
                                  memory_slots=6, memory_width=4, read_heads=2).double()


def test_each_label_arrives_one_step_after_its_input():
    mann = small_mann()
    inputs = torch.randn(2, 7, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 7))
    logits, _ = mann.run_sequence(inputs, labels)
    changed = labels.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 3
    changed_logits, _ = mann.run_sequence(inputs, changed)
    assert torch.equal(logits[:, :5], changed_logits[:, :5])  # y_4 is seen at step 5, not before
    assert not torch.allclose(logits[:, 5], changed_logits[:, 5])


def test_presentation_index_counts_earlier_instances_of_the_class():
    mann = small_mann()
    ways, shots, queries = 3, 1, 3
    episodes = Episodes(torch.rand(2, 3, 1, 16, 16, dtype=torch.float64), torch.arange(3).expand(2, -1),
                        torch.rand(2, 9, 1, 16, 16, dtype=torch.float64), torch.arange(3).repeat_interleave(3).expand(2, -1),
                        ways, shots, queries, torch.arange(3).expand(2, -1))
    _, labels, presentation = mann.sequence_logits(episodes, torch.Generator().manual_seed(0))
    for task in range(2):
        for t in range(12):
            assert presentation[task, t] == int((labels[task, : t + 1] == labels[task, t]).sum())
    per_episode = accuracy_by_presentation(mann, [episodes], seed=0)
    assert per_episode.shape == (2, 4)  # 2 episodes, 4 instances per class
    mann.eval()  # as accuracy_by_presentation scores it
    logits, labels, presentation = mann.sequence_logits(episodes, torch.Generator().manual_seed(0))
    hits = logits.argmax(-1) == labels
    for task in range(2):
        for index in range(4):
            expected = hits[task][presentation[task] == index + 1].double().mean()
            assert torch.allclose(per_episode[task, index], expected)


def test_snail_shared_support_path_equals_one_sequence_per_query():
    torch.manual_seed(0)
    snail = SNAIL(Conv4(hidden_channels=4, image_size=16), ways=3, shots=2).double()
    support = torch.randn(2, 6, 4, dtype=torch.float64)
    support_y = torch.randint(0, 3, (2, 6))
    query = torch.randn(2, 5, 4, dtype=torch.float64)
    fast = snail.logits_from_embeddings(support, support_y, query, 3)
    labelled = torch.cat([support, F.one_hot(support_y, 3).double()], -1)
    for q in range(5):
        sequence = torch.cat([labelled, F.pad(query[:, q:q + 1], (0, 3))], 1)  # (support, query) as one sequence
        stream = (sequence, sequence[:, :0])
        for layer in snail.layers:
            stream = layer(stream)
        assert torch.allclose(snail.readout(stream[0][:, -1]), fast[:, q], atol=1e-10)


def test_snail_is_causal():
    torch.manual_seed(0)
    snail = SNAIL(Conv4(hidden_channels=4, image_size=16), ways=3, shots=2).double()
    sequence = torch.randn(1, 7, 7, dtype=torch.float64)
    later_changed = sequence.clone()
    later_changed[:, 5:] = torch.randn(1, 2, 7, dtype=torch.float64)
    outputs = []
    for tokens in (sequence, later_changed):
        stream = (tokens, tokens[:, :0])
        for layer in snail.layers:
            stream = layer(stream)
        outputs.append(stream[0])
    assert torch.allclose(outputs[0][:, :5], outputs[1][:, :5])
    assert not torch.allclose(outputs[0][:, 5:], outputs[1][:, 5:])


def test_transformer_mask_lets_queries_see_the_support_set_and_themselves():
    blocked = support_and_self_mask(2, 3)
    allowed = ~blocked
    assert allowed[:, :2].all()
    assert torch.equal(allowed[:, 2:], torch.eye(5, dtype=torch.bool)[:, 2:])


def test_leo_kl_matches_torch_distributions():
    mean, log_std = torch.randn(3, 4), torch.randn(3, 4) * 0.3
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean, log_std.exp()),
                                                 torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl_to_standard(mean, log_std), expected, atol=1e-6)


def test_leo_orthogonality_penalty_is_zero_for_uncorrelated_rows():
    rows = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    assert float(decoder_orthogonality(rows)) < 1e-12
    assert float(decoder_orthogonality(torch.tensor([[1.0, -1.0, 0.0], [2.0, -2.0, 0.1]]))) > 1.5


def test_leo_latent_steps_lower_the_support_loss():
    torch.manual_seed(0)
    leo = LEO(Conv4(hidden_channels=4, image_size=16), latent_dim=3, latent_steps=5, finetune_steps=0,
              latent_lr=1.0).double().eval()
    support = torch.randn(2, 6, 4, dtype=torch.float64)
    support_y = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, -1)

    def support_loss(latent):
        weights = leo.weights(latent)
        return F.cross_entropy((support @ weights.transpose(-1, -2)).flatten(0, 1), support_y.flatten())

    adapted = leo._adapt(support, support_y, 3)
    assert support_loss(adapted["latent"]) < support_loss(adapted["initial"])


def test_leo_meta_gradient_matches_finite_differences():
    """Second order through the latent steps and fine-tuning (samples fixed by the seed). The
    encoder penalty is off: it stops the gradient of the adapted latent on purpose."""
    torch.manual_seed(0)
    leo = LEO(Conv4(hidden_channels=3, image_size=16), latent_dim=2, latent_steps=2, finetune_steps=2,
              latent_lr=0.5, finetune_lr=0.1, encoder_penalty=0.0).double().train()
    episodes = Episodes(torch.rand(1, 4, 1, 16, 16, dtype=torch.float64), torch.tensor([[0, 0, 1, 1]]),
                        torch.rand(1, 4, 1, 16, 16, dtype=torch.float64), torch.tensor([[0, 1, 0, 1]]),
                        2, 2, 2, torch.tensor([[0, 1]]))

    def loss() -> torch.Tensor:
        torch.manual_seed(7)
        return leo.meta_loss(episodes)[0]

    parameters = [leo.log_latent_lr, leo.log_finetune_lr, leo.decode.weight]
    gradients = torch.autograd.grad(loss(), parameters)
    step = 1e-6
    for parameter, gradient in zip(parameters, gradients):
        index = (0,) * parameter.dim()
        with torch.no_grad():
            parameter[index] += step
            up = loss()
            parameter[index] -= 2 * step
            down = loss()
            parameter[index] += step
        assert abs(float((up - down) / (2 * step)) - float(gradient[index])) < 1e-6 * max(1.0, abs(float(gradient[index])))
    # every parameter at once (encoder, relation net, backbone included), along a random direction
    everything = list(leo.parameters())
    gradients = torch.autograd.grad(loss(), everything)
    direction = [torch.randn_like(p) for p in everything]
    directional = sum(float((g * d).sum()) for g, d in zip(gradients, direction))
    with torch.no_grad():
        for p, d in zip(everything, direction):
            p.add_(step * d)
        up = loss()
        for p, d in zip(everything, direction):
            p.sub_(2 * step * d)
        down = loss()
        for p, d in zip(everything, direction):
            p.add_(step * d)
    assert abs(float((up - down) / (2 * step)) - directional) < 1e-5 * max(1.0, abs(directional))
