"""fleet_gc: the collector policy while a fleet runs is applied once, nested users share it, and it is undone."""
import gc

from pat_runtime.fleet.gcpolicy import active, fleet_gc


def test_fleet_gc_raises_threshold_freezes_and_restores():
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    with fleet_gc(gen0=12345):
        assert active()
        assert gc.get_threshold()[0] == max(before[0], 12345)
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > frozen_before
        with fleet_gc(gen0=99999):            # nested: the outer policy stays
            assert gc.get_threshold()[0] == max(before[0], 12345)
        assert active()
        assert gc.get_threshold()[0] == max(before[0], 12345)
    assert not active()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_fleet_gc_still_collects_cycles():
    class Node:
        pass

    with fleet_gc(gen0=100):                  # a low threshold here: collections still run and free cycles
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
