"""tools/compare_n4.py compares N4 settings on a cohort's slices."""
import json

from conftest import run_tool
from helpers import write_phantom_cohort


def test_compare_n4_writes_settings(tmp_path):
    cohort_dir = tmp_path / 'cohort'
    write_phantom_cohort(cohort_dir)
    out = tmp_path / 'n4.json'

    result = run_tool('tools/compare_n4.py', cohort_dir, '--settings',
                      '4:1e-6', '8:1e-3', '--max-slices', '2', '--out', out)

    figures = json.loads(out.read_text())
    assert figures['slices'] == 2
    settings = figures['settings']
    assert [(s['shrink_factor'], s['convergence_threshold'])
            for s in settings] == [(4, 1e-6), (8, 1e-3)]
    # The first setting is the baseline, so it differs from itself by 0.
    assert settings[0]['grey_levels_from_baseline'] == 0
    for setting in settings:
        assert setting['seconds_per_slice'] > 0
        assert 0 <= setting['grey_levels_from_reference'] < 255
    assert 'vs reference' in result.output


def test_compare_n4_invalid_setting(tmp_path):
    result = run_tool('tools/compare_n4.py', tmp_path, '--settings', '8',
                      expect_ok=False)
    assert result.returncode == 2
    assert "invalid setting '8'" in result.output
