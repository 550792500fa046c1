"""PruningSession: the engine's object behind the explorer. Channel and searchable-op choices in one
dict, counts equal to the export, plans saved and loaded (also from uploaded text), all without
ipywidgets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, ModuleGroup, PlanError, PruningSession, count_resources

from helpers import Searchable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def session(x) -> PruningSession:
    torch.manual_seed(0)
    return PruningSession(Searchable().eval(), x)


def test_one_choices_dict_counts_the_export(session, x):
    choices = session.choices
    assert choices[ModuleGroup(0)] is None and len(choices) == len(session.mutable_units) + 1
    unit = session.mutable_units[0].name
    session.set_choices({unit: 0.5, ModuleGroup(0): 'conv1x1'})
    assert session.choices[unit] == 0.5 and session.choices[ModuleGroup(0)] == 'conv1x1'
    res, ref = session.resources(), count_resources(session.export(), x)
    assert (res.params, res.macs) == (ref.params, ref.macs)
    assert session.dropped_layers() == {'block._candidates.conv3x3'}
    what_if = session.resources({unit: 1.0})  # a what-if leaves the choices alone
    assert what_if.params > res.params and session.choices[unit] == 0.5


def test_set_choices_is_atomic(session):
    before = session.choices
    unit = session.mutable_units[0].name
    with pytest.raises((ValueError, KeyError)):
        session.set_choices({unit: 0.5, ModuleGroup(0): 'conv7x7'})
    with pytest.raises(ValueError):
        session.set_choices({unit: 2.0, ModuleGroup(0): 'conv1x1'})
    assert session.choices == before


def test_export_needs_a_candidate_in_every_group(session):
    with pytest.raises(ValueError, match="choose a candidate for every searchable op"):
        session.export()
    assert session.open_groups() == [session.module_mutator.group_label(0)]


def test_sample_choices_are_repeatable_and_not_applied(session):
    before = session.choices
    a, b = session.sample_choices(seed=3), session.sample_choices(seed=3)
    assert a == b and a[ModuleGroup(0)] in ('conv1x1', 'conv3x3') and session.choices == before


def test_plans_round_trip_from_files_and_text(session, tmp_path):
    unit = session.mutable_units[0].name
    session.set_choices({unit: 0.25, ModuleGroup(0): 'conv3x3'})
    path = tmp_path / "plan.json"
    session.save_plan(path)
    assert json.loads(path.read_text()) == session.plan() and session.plan()['block'] == 'conv3x3'
    saved = session.choices
    session.set_choices({**session.max_choices, ModuleGroup(0): None})
    assert session.load_plan(path) == saved and session.choices == saved
    text = session.plan_json().encode().replace(b'0.25', b'0.5')
    session.set_choices(session.max_choices)
    assert session.load_plan_text(text, "upload.json")[unit] == 0.5 and session.choices[unit] == 0.5


@pytest.mark.parametrize("text, message", [
    (b"\xff\xfe not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"nope": 0.5}', "does not fit this model"),
])
def test_bad_plan_text_changes_nothing(session, text, message):
    before = session.choices
    with pytest.raises(PlanError, match=message):
        session.load_plan_text(text, "upload.json")
    assert session.choices == before


def test_a_prepared_mutator_and_bad_arguments(x):
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)), example_inputs=x)
    session = PruningSession(mutator)
    assert session.module_mutator is None and session.choices == mutator.current_choices
    with pytest.raises(ValueError, match="no searchable ops"):
        session.set_choices({ModuleGroup(0): 'conv1x1'})
    with pytest.raises(ValueError, match="not prepared"):
        PruningSession(ChannelMutator())
    with pytest.raises(TypeError, match="nn.Module or a prepared ChannelMutator"):
        PruningSession("resnet18")


@pytest.mark.slow  # a new interpreter imports torch and prepares a model (~11 s)
def test_scripts_need_no_widgets(tmp_path):
    """Count and save a plan of a searchable model with ipywidgets and matplotlib blocked."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules['ipywidgets'] = None
        sys.modules['matplotlib'] = None
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        from helpers import Searchable
        from razor_widgets import ModuleGroup, PruningSession
        session = PruningSession(Searchable().eval(), torch.randn(1, 3, 8, 8))
        session.set_choices({{ModuleGroup(0): 'conv1x1'}})
        session.save_plan({str(tmp_path / 'plan.json')!r})
        session.load_plan({str(tmp_path / 'plan.json')!r})
        print(session.resources().params, sum(p.numel() for p in session.export().parameters()))
        assert not any(m.startswith(('ipywidgets', 'matplotlib')) for m in sys.modules if sys.modules[m])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    counted, exported = out.stdout.split()
    assert counted == exported
