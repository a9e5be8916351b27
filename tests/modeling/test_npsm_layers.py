"""NPSM's building blocks (issue 12): the query-conditioned Conv-LSTM, the 2-D attention, region
shrinkage over clustered proposals, the box-outside fraction."""

import torch

from fastreid_ext.modeling.layers.npsm import (QueryConvLSTMCell, box_outside_fraction,
                                               cluster_subregions, region_attention, spatial_softmax)


def test_conv_lstm_shapes_gradients_and_query_conditioning():
    torch.manual_seed(0)
    cell = QueryConvLSTMCell(in_channels=8, hidden_channels=6, query_dim=5)
    x = torch.randn(3, 8, 7, 7, requires_grad=True)
    q = torch.randn(3, 5, requires_grad=True)
    h, c = cell(x, None, q)
    assert h.shape == c.shape == (3, 6, 7, 7)
    h2, c2 = cell(x, (h, c), q)  # a second step from the first one's state
    h2.pow(2).sum().backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert q.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    with torch.no_grad():  # another query, same input: another state (the gates read the query)
        h3, _ = cell(x, None, q.flip(0))
    assert not torch.allclose(h3, h)
    with torch.no_grad():  # and the state carries over: the second step differs from a fresh one
        assert not torch.allclose(cell(x, None, q)[0], h2)


def test_spatial_softmax_is_over_the_whole_map():
    logits = torch.zeros(2, 3, 3)
    logits[0, 2, 1] = 8.0
    a = spatial_softmax(logits)
    assert torch.allclose(a.sum(dim=(1, 2)), torch.ones(2))
    assert a[0, 2, 1] > 0.95 and a[0, 0].sum() < 0.03  # not a per-row softmax (each row would sum to 1)
    assert torch.allclose(a[1], torch.full((3, 3), 1 / 9))


def _proposals_around(box, n, gen, jitter=4.0):
    b = torch.tensor(box, dtype=torch.float32)
    return b + (torch.rand(n, 4, generator=gen) - 0.5) * 2 * jitter


def test_each_shrinkage_step_lies_inside_the_previous_region_and_clusters_follow_people():
    g = torch.Generator().manual_seed(0)
    person_a, person_b = [20, 40, 60, 160], [200, 30, 245, 170]
    props = torch.cat([_proposals_around(person_a, 30, g), _proposals_around(person_b, 30, g),
                       torch.tensor([[0.0, 0.0, 384.0, 192.0], [100.0, 10.0, 300.0, 190.0]])])
    subs = cluster_subregions(props, torch.tensor([0.0, 0.0, 384.0, 192.0]), n=2)
    assert len(subs) == 2
    holds = [(box_outside_fraction(subs, torch.tensor(p, dtype=torch.float32)) == 0).tolist() for p in (person_a, person_b)]
    assert sorted(map(tuple, holds)) == [(False, True), (True, False)]  # one sub-region per person
    region = torch.tensor([0.0, 0.0, 384.0, 192.0])
    for step in range(5):
        subs = cluster_subregions(props, region, n=3)
        assert ((subs[:, 0] >= region[0]) & (subs[:, 1] >= region[1]) & (subs[:, 2] <= region[2])
                & (subs[:, 3] <= region[3])).all(), (step, subs, region)
        area = lambda r: float((r[2] - r[0]) * (r[3] - r[1]))  # noqa: E731
        nxt = subs[step % len(subs)]
        assert area(nxt) <= area(region)
        region = nxt
    # proposals centred inside the region but reaching past it: their sub-regions are clipped to it
    region = torch.tensor([0.0, 0.0, 100.0, 100.0])
    reaching = torch.tensor([[60.0, 10.0, 120.0, 90.0], [-30.0, 20.0, 40.0, 60.0], [10.0, 60.0, 50.0, 130.0]])
    subs = cluster_subregions(reaching, region, n=3)
    assert len(subs) == 3 and (subs[:, :2] >= 0).all() and (subs[:, 2:] <= 100).all()
    # no proposal inside: the region stays
    assert torch.equal(cluster_subregions(props, torch.tensor([300.0, 0.0, 310.0, 5.0])), torch.tensor([[300.0, 0.0, 310.0, 5.0]]))


def test_region_attention_by_hand():
    att = torch.tensor([[0.7, 0.1], [0.1, 0.1]])
    region = torch.tensor([0.0, 0.0, 10.0, 10.0])
    subs = torch.tensor([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 10.0, 5.0], [5.0, 5.0, 10.0, 10.0], [0.0, 0.0, 2.5, 10.0]])
    torch.testing.assert_close(region_attention(att, region, subs), torch.tensor([0.7, 0.4, 0.1, 0.4]))
    torch.testing.assert_close(region_attention(att, region, subs, reduce="sum"), torch.tensor([0.7, 0.8, 0.1, 0.4]))


def test_box_outside_fraction_by_hand():
    """The cost the registered BoxInsideLoss takes in expectation (its own tests: tests/modeling/test_npsm.py)."""
    box = torch.tensor([10.0, 10.0, 20.0, 30.0])
    regions = torch.tensor([[0.0, 0.0, 50.0, 50.0], [15.0, 0.0, 50.0, 50.0], [30.0, 30.0, 40.0, 40.0]])
    torch.testing.assert_close(box_outside_fraction(regions, box), torch.tensor([0.0, 0.5, 1.0]))
