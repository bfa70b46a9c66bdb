import os
import re
import warnings

import numpy as np
import pytest

import meanfield as mf
from meanfield._simulate import save_times


def test_save_times():
    assert np.allclose(save_times(1.0), [0, 1])
    assert np.allclose(save_times(1.0, save_every=0.25), [0, 0.25, 0.5, 0.75, 1.0])
    assert np.allclose(save_times(1.0, save_every=0.3), [0, 0.3, 0.6, 0.9, 1.0])
    assert np.allclose(save_times(1.0, t_eval=[0.5, 1.0]), [0, 0.5, 1.0])


def test_a_run_shorter_than_a_billionth_of_save_every_keeps_its_initial_state():
    # t0 was replaced by t_final when t_final − t0 < 1e-9·save_every: save_times(1e-10, 1.0) was [1e-10], and the run
    # returned one state, the initial one labelled t_final
    assert save_times(1e-10, save_every=1.0).tolist() == [0.0, 1e-10]
    assert save_times(1.0 + 1e-10, save_every=1.0, t0=1.0).tolist() == [1.0, 1.0 + 1e-10]
    p = mf.Particles.uniform(4, seed=0)
    tr = mf.simulate(mf.Model(1.0), p, 1e-10, backend="particles", save_every=1.0)
    assert tr.times.tolist() == [0.0, 1e-10] and len(tr.states) == 2
    assert np.array_equal(tr.states[0].positions, p.positions)


@pytest.mark.parametrize("kwargs, match", [
    (dict(t_final=0.0), "`t_final`"), (dict(t_final=1.0, save_every=-1.0), "`save_every`"),
    (dict(t_final=1.0, t_eval=[0.5, 0.2]), "`t_eval`"), (dict(t_final=1.0, t_eval=[2.0]), "`t_eval`"),
    (dict(t_final=1.0, t_eval=[0.5], save_every=0.1), "not both"),
])
def test_bad_times(kwargs, match):
    with pytest.raises(ValueError, match=match):
        save_times(**kwargs)


def test_trajectory_and_dense_output():
    model = mf.Model(2.0)
    dens = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2], 8)
    tr = mf.simulate(model, dens, 1.0, t_eval=[0.1, 0.37, 1.0])
    assert tr.success and tr.status.message == "Reached t_final."
    assert np.allclose(tr.times, [0, 0.1, 0.37, 1.0]) and len(tr.states) == 4 == len(tr)
    assert set(tr.diagnostics) >= {"mass", "energy", "tail_fraction", "min_rho", "max_speed"}
    assert tr.diagnostics["energy"].shape == (4,)
    # restarting from a saved state reproduces the rest of the run (to the step-size control)
    tr2 = mf.simulate(model, tr.states[2], 0.63, rtol=1e-12)
    ref = mf.simulate(model, dens, 1.0, rtol=1e-12).final
    assert np.max(np.abs(tr2.final.coeffs - ref.coeffs)) < 1e-8
    assert "Trajectory(" in repr(tr)


def test_callback_stops():
    seen = []
    tr = mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, save_every=0.1,
                     callback=lambda t, s, d: seen.append(t) or t >= 0.3)
    assert tr.status is mf.Status.CALLBACK_STOP and abs(tr.times[-1] - 0.3) < 1e-12 and len(seen) == 3


@pytest.mark.parametrize("answer", [0.7, 1, "stop", [1]])
def test_a_callback_returning_neither_a_bool_nor_none_is_an_error(answer, tmp_path):
    """``return d["energy"]`` stopped the run at its first save, with no error; the states so far still go to the
    checkpoint, resumable once the callback is fixed."""
    path = tmp_path / "run.h5"
    with pytest.raises(TypeError, match=r"`callback` must return True \(stop the run\) or None/False .*at t=0.1"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, save_every=0.1, checkpoint=path,
                    callback=lambda t, s, d: answer)
    assert mf.load(path).times[-1] == pytest.approx(0.1)


def test_a_callback_may_answer_with_a_numpy_bool():
    tr = mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, save_every=0.1,
                     callback=lambda t, s, d: np.float64(t) >= 0.2)
    assert tr.status is mf.Status.CALLBACK_STOP and tr.times[-1] == pytest.approx(0.2)


def test_front_door_errors():
    with pytest.raises(TypeError, match="`model`"):
        mf.simulate("post-ln", mf.Density.uniform(4), 1.0)
    with pytest.raises(ValueError, match="`backend`"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, backend="gpu")


def test_progress_bar_reports_steps(capsys):
    mf.simulate(mf.Model(2.0), mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2], 16), 0.2, progress=True)
    err = capsys.readouterr().err
    assert "dt=" in err and "tail=" in err and "lmax=16" in err


def test_backends_lists_every_backend_right_after_import():
    import subprocess
    import sys
    code = "import meanfield as mf; print(sorted(mf.BACKENDS)); print(mf.BACKENDS['spectral'].name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['hybrid', 'particles', 'particles-sh', 'spectral']" and out[1] == "spectral"


def test_resume_extends_a_finished_run_as_if_it_had_been_longer(tmp_path):
    model, dens = mf.Model(2.0), mf.Density.random(16, seed=1, amplitude=0.5)
    path = tmp_path / "run.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        mf.simulate(model, dens, 0.5, save_every=0.125, checkpoint=path)
        longer = mf.resume(path, t_final=1.0)
        full = mf.simulate(model, dens, 1.0, save_every=0.125)
        assert np.array_equal(longer.times, full.times) and longer.success
        assert max(np.max(np.abs(a.coeffs - b.coeffs)) for a, b in zip(full.states, longer.states)) <= 1e-14
        assert len(mf.load(path)) == len(full) and mf._io.run_info(path)["t_final"] == 1.0
        assert len(mf.resume(path)) == len(full)                      # complete again: returned as it is
        again = mf.resume(path, t_final=1.3, save_every=0.2)          # another spacing, and a short last interval
        assert np.allclose(again.times[len(full):], [1.2, 1.3])
    with pytest.raises(ValueError, match="`t_final` must be ≥ the stored"):
        mf.resume(path, t_final=0.7)
    with pytest.raises(ValueError, match="give `t_final`"):
        mf.resume(path, save_every=0.1)


def test_an_extension_the_layer_map_cannot_reach_is_refused_before_any_work(tmp_path):
    path = tmp_path / "layers.h5"
    p = mf.Particles.uniform(30, seed=2)
    mf.simulate(mf.Model(1.0), p, 1.0, save_every=0.5, backend="particles", checkpoint=path, time="layers", step=0.1)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="whole numbers of layers"):
        mf.resume(path, t_final=2.05)
    assert path.read_bytes() == before and mf._io.run_info(path)["complete"]
    assert mf.resume(path, t_final=2.0).success


def test_extension_spacing_is_the_runs_not_a_short_last_gap(tmp_path):
    path = tmp_path / "run.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        mf.simulate(mf.Model(1.0), mf.Density.random(24, seed=1, amplitude=0.3), 1.0, save_every=0.3, checkpoint=path)
        longer = mf.resume(path, t_final=1.6)
    assert np.allclose(longer.times, [0, 0.3, 0.6, 0.9, 1.0, 1.3, 1.6])


def test_extension_spacing_of_a_run_stopped_early_is_its_save_every(tmp_path):
    # stopped (max_steps) before its first save time: its stored times [0, 0.2] are no spacing; the save times it
    # has not reached (1, 2, 3, 4) are, and the extension to 6 took 0.2 (10 states) for them
    path = tmp_path / "run.h5"
    model, dens = mf.Model(1.0, scheme="pre-ln"), mf.Density.random(16, seed=1, amplitude=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        stopped = mf.simulate(model, dens, 4.0, save_every=1.0, max_steps=3, checkpoint=path)
        assert stopped.status is mf.Status.STEP_TOO_SMALL and 0 < stopped.times[-1] < 1
        longer = mf.resume(path, t_final=6.0, options={"max_steps": 10**7})
    assert longer.success
    assert np.allclose(longer.times, [0, stopped.times[-1], 1, 2, 3, 4, 5, 6])


def test_concatenated_runs_keep_the_keys_of_both_parts():
    from meanfield._simulate import _concatenate

    a = mf.simulate(mf.Model(1.0), mf.Density.uniform(8), 0.2, save_every=0.1)
    b = mf.simulate(mf.Model(1.0), a.final, 0.4, save_every=0.1, t0=0.2)
    b.diagnostics["only_in_b"] = np.ones(len(b.times))
    ab = _concatenate(a, b)
    assert len(ab.times) == 5 and np.isnan(ab.diagnostics["only_in_b"][:3]).all()
    assert np.array_equal(ab.diagnostics["only_in_b"][3:], [1.0, 1.0])
    assert all(len(v) == len(ab.times) for v in ab.diagnostics.values())


def test_t_eval_before_t_final_still_runs_to_the_end():
    p = mf.Particles.uniform(20, seed=1)
    tr = mf.simulate(mf.Model(2.0), p, 1.0, backend="particles", t_eval=[0.2, 0.5])
    assert np.array_equal(tr.times, [0.0, 0.2, 0.5, 1.0]) and tr.status is mf.Status.OK
    ref = mf.simulate(mf.Model(2.0), p, 1.0, backend="particles", t_eval=[0.2, 0.5, 1.0])
    assert np.max(np.abs(tr.final.positions - ref.final.positions)) < 1e-14


def test_t_eval_a_rounding_error_short_of_t_final_ends_at_t_final():
    assert np.array_equal(save_times(1.0, t_eval=np.cumsum([0.1] * 10))[-2:], [np.cumsum([0.1] * 9)[-1], 1.0])


# ----------------------------------------------------------------------------------------------
# the arguments of simulate, checked before any work (and before the checkpoint is written)

def _no_run(tmp_path, match, error=(TypeError, ValueError), **kwargs):
    """simulate(...) refuses ``kwargs`` naming the parameter, before it writes its checkpoint (nothing ran)."""
    path = tmp_path / "c.h5"
    kwargs = {"checkpoint": path, "save_every": 0.1, **kwargs}
    initial = kwargs.pop("initial", mf.Density.uniform(4))
    with pytest.raises(error, match=match):
        mf.simulate(mf.Model(1.0), initial, 0.2, **kwargs)
    assert not path.exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(initial=[]), r"`initial` must be a measure .* or a non-empty list of Densities .*got initial=\[\]"),
    (dict(initial=()), r"`initial` must be a measure"),
    (dict(checkpoint_every="a"), r"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every='a'"),
    (dict(checkpoint_every=None), r"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every=None"),
    (dict(checkpoint_every=2.5), r"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every=2.5"),
    (dict(checkpoint_every=True), r"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every=True"),
    (dict(checkpoint_every=0), r"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every=0"),
    (dict(checkpoint_every="every"), r"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every='every'"),
    (dict(metadata=[1]), r"`metadata` must be a dict"),
    (dict(metadata={"a": object()}), r"`metadata` values must be strings, numbers or booleans.*metadata\['a'\]"),
    (dict(metadata={1: 2}), r"`metadata` keys must be non-empty strings; got the key 1"),
    (dict(metadata={"options": "x"}), r"`metadata` key 'options' is reserved"),
    (dict(callback=5), r"`callback` must be callable .*got callback=5"),
    (dict(callback=lambda t: None), r"`callback` must accept three positional arguments \(t, state, diagnostics\)"),
    (dict(callback=lambda t, s, d, extra: None), r"`callback` must accept three positional arguments"),
    (dict(save_every=1e-300), r"`save_every` must be ≥ .*got save_every=1e-300"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, kwargs, match):
    """IndexError for [], raw int() errors (or silent acceptance of 2.5 and True) for checkpoint_every, dict and h5py
    errors for metadata, a callback that failed only after the first save interval."""
    _no_run(tmp_path, match, **kwargs)


def test_a_callback_with_defaults_or_varargs_is_accepted():
    seen = []
    mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.2, save_every=0.1, callback=lambda *a: seen.append(a[0]))
    mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.2, save_every=0.1,
                callback=lambda t, s, d, extra=None: seen.append(t))
    assert len(seen) == 4


def test_bad_checkpoint_paths_are_refused_before_any_work(tmp_path):
    """h5py's "Unable to synchronously create file", IsADirectoryError or pathlib's TypeError, after the set-up."""
    for path, error, match in [(tmp_path / "nope" / "c.h5", ValueError, r"`checkpoint` must be a file in an existing "
                                r"folder; .*the folder .* does not exist"),
                               (tmp_path, ValueError, r"`checkpoint` must be a file path, not a folder"),
                               (5, TypeError, r"`checkpoint` must be a file path \(a str or pathlib.Path\); got checkpoint=5")]:
        with pytest.raises(error, match=match):
            mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.2, checkpoint=path)
    assert list(tmp_path.iterdir()) == []


def test_a_fixed_step_beyond_max_steps_is_refused_naming_step(tmp_path):
    """The spectral backend ran max_steps steps of "rk4", then reported STEP_TOO_SMALL ("the adaptive step size fell
    below `min_step`"), far from t_final."""
    _no_run(tmp_path, r"`step` must be ≥ \(t_final − t0\)/10 = 0.02 \(max_steps=10\); got step=0.001, which takes 200 "
                      r"steps", method="rk4", step=1e-3, max_steps=10)
    _no_run(tmp_path, r"`step` must be ≥ .*got step=1e-300", method="rk4", step=1e-300)
    _no_run(tmp_path, r"`step` must be ≥ .*got step=1e-300", method="rk4", step=1e-300, backend="hybrid")
    _no_run(tmp_path, r"particle_options: `step` must be ≥ .*got step=1e-300", backend="hybrid",
            particle_options={"step": 1e-300})
    ok = mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.2, method="rk4", step=0.02, max_steps=10)
    assert ok.success and len(ok.steps["t"]) == 10


def test_resume_refuses_a_save_every_that_asks_for_too_many_states(tmp_path):
    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(1.0), mf.Particles.uniform(6, seed=0), 0.2, backend="particles", step=0.1, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"`save_every` must be ≥ .*at most 1000000 saved states"):
        mf.resume(path, t_final=1.0, save_every=1e-300)
    with pytest.raises(TypeError, match=r"`checkpoint_every` must be an integer >= 1"):
        mf.resume(path, t_final=1.0, checkpoint_every=0.5)
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------------------------
# long runs never lose work (a review that killed and broke runs)


def test_a_state_is_recorded_all_or_nothing(tmp_path, monkeypatch):
    # a Ctrl-C inside diagnostics() left n times and n − 1 diagnostics: the file read as complete, shifted by one
    from meanfield.backends._stepper import ParticleStepper

    calls = {"n": 0}
    original = ParticleStepper.diagnostics

    def interrupted_on_the_third_save(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(ParticleStepper, "diagnostics", interrupted_on_the_third_save)
    path = tmp_path / "run.h5"
    with pytest.warns(mf.MeanfieldWarning, match="simulate stopped"):
        tr = mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, seed=0), 1.0, backend="particles", save_every=0.25,
                         checkpoint=path, checkpoint_every=1)
    assert tr.status is mf.Status.INTERRUPTED and len(tr.times) == 2
    assert all(len(v) == 2 for v in tr.diagnostics.values())
    back = mf.load(path)
    assert len(back.times) == 2 and all(len(v) == 2 for v in back.diagnostics.values())


def test_an_error_inside_a_run_keeps_the_saved_states(tmp_path):
    # α(t) turning invalid at t = 0.75: the error escaped and the checkpoint stopped at its last periodic write
    model = mf.Model(2.0, scheme="ngpt", alpha=lambda t: 1.0 if t < 0.75 else 0.0)
    path = tmp_path / "run.h5"
    with pytest.raises(ValueError, match="alpha"):
        mf.simulate(model, mf.Particles.uniform(20, seed=0), 1.0, backend="particles", save_every=0.1,
                    checkpoint=path, checkpoint_every=4)
    back = mf.load(path, alpha=lambda t: 1.0)
    assert back.status is mf.Status.INCOMPLETE and back.times[-1] == pytest.approx(0.7)


def test_a_failed_checkpoint_write_is_warned_about_and_the_run_goes_on(tmp_path, monkeypatch):
    import meanfield._io as io

    real_save, calls = io.save_checkpoint, {"n": 0}

    def disk_full_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("Unable to flush file (No space left on device)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(io, "save_checkpoint", disk_full_once)
    path = tmp_path / "run.h5"
    with pytest.warns(mf.MeanfieldWarning, match="could not write the checkpoint .* goes on"):
        tr = mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, seed=0), 1.0, backend="particles", save_every=0.25,
                         checkpoint=path, checkpoint_every=1)
    assert tr.status is mf.Status.OK and mf.load(path).times[-1] == 1.0
    monkeypatch.setattr(io, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(OSError("No space left on device")))
    with pytest.raises(OSError, match="could not write the checkpoint .* \\(resumable"):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, seed=0), 1.0, backend="particles", save_every=0.5,
                    checkpoint=tmp_path / "other.h5")


def _slow_checkpoint_writes(monkeypatch, seconds, durations=None):
    """Make every checkpoint write take ``seconds`` longer; returns the list of the numbers of saved states the written
    files held (and appends each write's wall time to ``durations``)."""
    import time

    import meanfield._io as io

    real_save, written = io.save_checkpoint, []

    def slow_save(trajectory, path, point):
        start = time.monotonic()
        time.sleep(seconds)
        written.append(len(trajectory.times))
        try:
            return real_save(trajectory, path, point)
        finally:
            if durations is not None:
                durations.append(time.monotonic() - start)

    monkeypatch.setattr(io, "save_checkpoint", slow_save)
    return written


def test_auto_checkpoints_keep_the_writes_to_their_share_of_the_run(tmp_path, monkeypatch):
    # writes of ≥ 0.05 s against saved states ~1 ms apart: "auto" waits for 9 write-times of work (≥ 0.45 s)
    # between writes, so a run of 40 saved states writes its start and its end (a stalled machine: a few more);
    # checkpoint_every=1 writes after each, whatever that costs
    written = _slow_checkpoint_writes(monkeypatch, 0.05)
    model, initial = mf.Model(1.0), mf.Particles.uniform(10, seed=0)
    paced = mf.simulate(model, initial, 1.0, backend="particles", method="rk4", step=0.025, save_every=0.025,
                        checkpoint=tmp_path / "auto.h5")
    assert 2 <= len(written) <= 8 and written[0] == 1 and written[-1] == 41
    stored = mf.load(tmp_path / "auto.h5")
    assert stored.success and np.array_equal(stored.times, paced.times)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(stored.states, paced.states))
    written.clear()
    mf.simulate(model, initial, 1.0, backend="particles", method="rk4", step=0.025, save_every=0.025,
                checkpoint=tmp_path / "every.h5", checkpoint_every=1)
    assert written == list(range(1, 42))


def test_auto_checkpoints_write_a_waiting_state_once_the_pace_allows(tmp_path, monkeypatch):
    # the state saved at t = 0.5 waits (the last write was too recent); the callback then works for 20 write-times
    # (as measured: a loaded machine writes slower), more than nine, so the next step writes it (with a resume point)
    # well before the next save time
    durations = []
    written = _slow_checkpoint_writes(monkeypatch, 0.01, durations)
    path, seen = tmp_path / "ck.h5", []

    def callback(t, state, diagnostics):
        seen.append((t, len(written), len(mf.load(path))))
        if len(seen) == 1:
            import time
            time.sleep(20 * max(durations) + 0.1)

    mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 1.0, backend="particles", method="rk4",
                step=0.05, save_every=0.5, checkpoint=path, callback=callback)
    # at t = 1 (before its own write) the file holds t = 0 and t = 0.5, written at a step in between
    assert seen[1][0] == 1.0 and seen[1][2] == 2 and seen[1][1] >= 2


def test_signals_during_a_checkpoint_write_wait_for_it():
    import os
    import signal

    from meanfield._simulate import STOP_REQUESTED, _signals_deferred

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt):   # Python's own SIGINT handler, once the write is done
            with _signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                written = True                    # the write goes on to its end
        assert written
        with _signals_deferred():                # the handler in place gets the signal, after the write
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []
        assert seen == [signal.SIGTERM]
        with _signals_deferred(interrupt=False):   # the final write: the run is done, no KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with _signals_deferred():                # an ignored signal stays ignored
            os.kill(os.getpid(), signal.SIGTERM)
        assert not STOP_REQUESTED.is_set()        # a library run sets no process-wide flag (later runs would stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_resume_names_a_file_that_holds_no_run(tmp_path):
    from meanfield.cli import main

    out = tmp_path / "energy.h5"
    assert main(["run", "examples/energy_minimize_s1.toml", "--output", str(out), "--quiet"]) == 0
    with pytest.raises(ValueError, match="holds no run of meanfield.simulate"):
        mf.resume(out)


def test_two_runs_cannot_write_one_checkpoint(tmp_path):
    # interleaved runs into one --output replaced each other's checkpoint, the finished result silently lost
    import os
    import socket

    path = tmp_path / "run.h5"
    lock = tmp_path / ".run.h5.lock"
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")            # a live process of this host
    with pytest.raises(mf.MeanfieldError, match="another run is writing .*run.h5"):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path)
    assert not path.exists()
    lock.write_text(f"{socket.gethostname()} 999999999")                 # a killed run's lock is taken over
    tr = mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path)
    assert tr.success and path.exists() and not lock.exists()


def test_the_checkpoint_lock_holds_within_one_process(tmp_path):
    # a run on another thread of this process: its lock names our own pid, which read as a leftover
    import threading

    path = tmp_path / "run.h5"
    started, release = threading.Event(), threading.Event()

    def slow(t, state, diagnostics):
        started.set()
        release.wait(30)
        return False

    first = threading.Thread(target=mf.simulate, args=(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2),
                             kwargs=dict(backend="particles", save_every=0.1, checkpoint=path, callback=slow))
    first.start()
    try:
        assert started.wait(30)
        with pytest.raises(mf.MeanfieldError, match="another run is writing"):
            mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path)
    finally:
        release.set()
        first.join(60)
    assert not (tmp_path / ".run.h5.lock").exists() and mf.load(path).success


@pytest.mark.parametrize("t_eval", [[0.5, True], [False, True], np.array([False, True]), True])
def test_boolean_save_times_are_refused(t_eval):
    """numpy read t_eval=[0.5, True] as [0.5, 1.0]."""
    with pytest.raises(TypeError, match=r"`t_eval` must be numbers; got booleans"):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(5), 2.0, backend="particles", t_eval=t_eval)


def test_a_particle_option_reset_to_its_default_when_the_hybrid_run_set_none(tmp_path):
    # `--option particle_options.rtol=none` on a hybrid run without particle_options (the default, None): the None
    # reached the particle backend, "`rtol` must be a real number; got rtol=None"
    path = tmp_path / "h.h5"
    mf.simulate(mf.Model(5.0), mf.Density.random(24, seed=2, amplitude=0.7), 1.0, backend="hybrid", oversample=1,
                save_every=0.25, checkpoint=path, callback=lambda t, s, d: t >= 0.25)
    assert mf.load(path).options["particle_options"] is None
    resumed = mf.resume(path, options={"particle_options": {"rtol": None, "atol": 1e-9}})
    assert resumed.success and mf.load(path).options["particle_options"] == {"atol": 1e-9}


def test_a_density_made_negative_by_the_lmax_option_names_lmax_not_initial():
    # exp(10 z) is positive; truncated to lmax=8 it rings below 0: the error said "`initial` must be a nonnegative
    # density", naming the argument that was fine and not the option that broke it
    rho0 = mf.Density.from_function(lambda x: np.exp(10 * x[..., 2]), 48).normalized()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        with pytest.raises(ValueError, match=r"`lmax` must keep the initial density nonnegative: lmax=8 truncates it "
                                             r"\(its band limit is 48\)"):
            mf.simulate(mf.Model(1.0), rho0, 0.5, lmax=8)
        with pytest.raises(ValueError, match="`initial` must be a nonnegative density"):   # negative as given
            mf.simulate(mf.Model(1.0), rho0.resized(8), 0.5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(progress="no"), TypeError, "`progress` must be True or False"),
    (dict(progress=0.0), TypeError, "`progress` must be True or False"),
    (dict(checkpoint_every=0), ValueError, "`checkpoint_every` must be an integer >= 1"),
    (dict(checkpoint_interval=-1.0), ValueError, "`checkpoint_interval` must be finite and >= 0"),
    (dict(callback=lambda t: None), TypeError, "`callback` must accept three positional arguments"),
])
def test_run_arguments_are_checked_by_simulate_and_by_resume_of_a_complete_file(tmp_path, kwargs, error, match):
    # progress="no" showed a progress bar; resume of a finished file returned it before any argument was checked
    path = tmp_path / "run.h5"
    mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.1, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(error, match=match):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.1, **kwargs)
    with pytest.raises(error, match=match):
        mf.resume(path, **kwargs)
    assert path.read_bytes() == before


def test_resuming_a_run_started_with_r0_does_not_warn_that_r0_is_unused(tmp_path):
    # the stored r0 = 2 went to the continuation, whose state carries its radius field: "`r0` is not used" at
    # every resume and extension of a Pre-LN run the user had given r0
    path = tmp_path / "pre.h5"
    model, dens = mf.Model(2.0, "pre-ln"), mf.Density.random(16, seed=1, degree=3)
    mf.simulate(model, dens, 0.5, save_every=0.25, r0=2.0, checkpoint=path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        longer = mf.resume(path, t_final=1.0)
    assert not [w for w in caught if "`r0`" in str(w.message)]
    full = mf.simulate(model, dens, 1.0, save_every=0.25, r0=2.0)
    assert np.array_equal(longer.times, full.times) and longer.options["r0"] == 2.0
    assert max(np.max(np.abs(a.radius - b.radius)) for a, b in zip(full.states, longer.states)) <= 1e-14
    assert mf.load(path).options["r0"] == 2.0


def test_sigterm_in_a_python_program_writes_the_checkpoint_then_terminates(tmp_path):
    # SIGTERM's default action ended the process at once: the checkpoint kept only what its last write held (here
    # the initial state), although the docstring promised a final write with the resume point
    import signal
    import subprocess
    import sys

    path = tmp_path / "run.h5"
    script = f"""
import os, signal, warnings
import meanfield as mf
warnings.simplefilter("ignore")
def callback(t, state, diagnostics):
    if t >= 0.5:
        os.kill(os.getpid(), signal.SIGTERM)
mf.simulate(mf.Model(2.0), mf.Density.random(12, seed=1, degree=3), 1.0, save_every=0.25, checkpoint={str(path)!r},
            checkpoint_every=1000, checkpoint_interval=None, callback=callback)
print("not reached")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == -signal.SIGTERM and "not reached" not in done.stdout
    stopped = mf.load(path)
    assert stopped.status is mf.Status.INTERRUPTED and "Interrupted by SIGTERM." in stopped.detail
    assert np.allclose(stopped.times, [0.0, 0.25, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        resumed = mf.resume(path)
        full = mf.simulate(mf.Model(2.0), mf.Density.random(12, seed=1, degree=3), 1.0, save_every=0.25)
    assert resumed.success and np.array_equal(resumed.times, full.times)
    assert max(np.max(np.abs(a.coeffs - b.coeffs)) for a, b in zip(full.states, resumed.states)) <= 1e-14
    assert not list(tmp_path.glob(".run.h5.lock"))


@pytest.mark.parametrize("backend", ["spectral", "particles"])
def test_an_energy_beyond_float64_is_inf_and_warned_about(backend):
    """At β = 1000 E_β exceeds float64 (e^β/(2β) for clustered tokens): the spectral diagnostic was NaN with numpy's
    'invalid value' warnings (inf weights times zero coefficients), the particles' inf with no word, in runs
    reported OK.  Both are now inf, warned about once; the energy of the initial state is meanfield.energy's."""
    initial = mf.Density.uniform(8) if backend == "spectral" else mf.Particles.uniform(50, 3, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = mf.simulate(mf.Model(1000.0), initial, 0.01, backend=backend, save_every=0.005)
    assert tr.status is mf.Status.OK
    assert np.all(np.isposinf(tr.diagnostics["energy"]))
    messages = [str(w.message) for w in caught]
    assert sum("`energy` diagnostic exceeds the float64 range at beta=1000.0" in m for m in messages) == 1
    assert not any(issubclass(w.category, RuntimeWarning) for w in caught), messages


def test_the_spectral_energy_diagnostic_at_moderate_beta_is_meanfield_energy():
    rho = mf.Density.random(12, seed=3, amplitude=0.5)
    for beta in (0.5, 5.0, 700.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mf.MeanfieldWarning)     # lmax=12 is below β=700's kernel band limit
            tr = mf.simulate(mf.Model(beta), rho, 1e-9, save_every=1e-9, rtol=1e-12)
        assert tr.diagnostics["energy"][0] == pytest.approx(mf.energy(rho, beta), rel=1e-13)


@pytest.mark.parametrize("backend", ["spectral", "particles", "particles-sh", "hybrid"])
def test_a_trajectory_as_initial_says_to_pass_one_of_its_states(backend):
    """The hybrid backend raised AttributeError ('Trajectory' object has no attribute 'lmax'), the others a
    TypeError with no word on what to pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0), mf.Particles.uniform(8, seed=1), 0.1, backend="particles")
    with pytest.raises(TypeError, match=r"got .*Trajectory.*pass one of its states, `traj.final`"):
        mf.simulate(mf.Model(1.0), tr, 0.2, backend=backend)
    with pytest.raises(TypeError, match=r"pass one of its states"):
        mf.energy(tr, 1.0)


@pytest.mark.parametrize("initial", [np.ones(3), None, [mf.Density.uniform(4), np.ones(3)]])
def test_the_hybrid_backend_names_an_initial_of_the_wrong_kind(initial):
    with pytest.raises(TypeError, match=r"backend='hybrid' needs `initial` to be a Density"):
        mf.simulate(mf.Model(1.0), initial, 0.2, backend="hybrid")


def test_a_resumed_run_warns_again_once_where_it_meets_the_condition_again(tmp_path):
    """The once-per-run warnings (a fixed step that does not resolve the motion, particles-sh's unresolved velocity)
    are per call: a checkpoint keeps no record of them, and a continuation that meets the condition again warns
    again, once, at its own time (documented in resume's docstring and docs/backends.md), never more often."""
    path = tmp_path / "run.h5"
    m = mf.Model(700.0, attention="unnormalized")
    runs = []
    for run in (lambda: mf.simulate(m, mf.Particles.uniform(2, seed=0), 0.004, backend="particles-sh", method="rk4",
                                    step=1e-4, save_every=0.002, checkpoint=path, callback=lambda t, s, d: t >= 0.002),
                lambda: mf.resume(path)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", mf.MeanfieldWarning)
            run()
        runs.append([str(w.message) for w in caught])
    for messages, t in zip(runs, ("0", "0.002")):
        for what in ("the spectral velocity is not resolved at t=", "does not resolve the motion at t="):
            found = [x for x in messages if what in x]
            assert len(found) == 1 and what + t + ":" in found[0], (what, messages)


def test_the_state_at_a_saved_time():
    # a trajectory had no way to ask for the state at a time: users searched `times` by hand and fell on
    # 0.30000000000000004 != 0.3; `at` finds a saved time to rounding and refuses any other, naming its neighbours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0), mf.Density.random(8, seed=1, degree=2), 1.0, save_every=0.1)
    assert tr.times[3] != 0.3 and tr.at(0.3) is tr.states[3] and tr.at(1) is tr.final and tr.at(0) is tr.states[0]
    with pytest.raises(ValueError, match=r"`t` must be a saved time .*got t=0.35, the saved times around it are 0.3 "
                                         r"and 0.4 \(of 11 in \[0, 1\]\)"):
        tr.at(0.35)
    with pytest.raises(ValueError, match=r"got t=2.0, the saved times around it are 1 \(of 11"):
        tr.at(2.0)
    with pytest.raises(TypeError, match="`t` must be a real number"):
        tr.at("0.3")


def test_a_ctrl_c_inside_a_run_returns_it_interrupted_as_the_docstring_says():
    # simulate catches KeyboardInterrupt and returns (a loop over runs goes on to the next run): nothing said so, and
    # a script's `except KeyboardInterrupt: break` never ran
    assert "is not raised" in mf.simulate.__doc__ and "mf.Status.INTERRUPTED" in mf.simulate.__doc__

    def stop(t, state, diagnostics):
        raise KeyboardInterrupt
    with pytest.warns(mf.MeanfieldWarning, match="Interrupted by KeyboardInterrupt"):
        tr = mf.simulate(mf.Model(1.0), mf.Density.random(8, seed=1, degree=2), 1.0, save_every=0.5, callback=stop)
    assert tr.status is mf.Status.INTERRUPTED and list(tr.times) == [0.0, 0.5]


def test_the_state_at_a_time_is_matched_on_the_run_s_own_time_scale():
    # Trajectory.at matched to 1e-9 absolute below t = 1: in a run to t = 1e-6, at(5e-10) returned the state at 0
    traj = mf.simulate(mf.Model(1.0), mf.Particles.uniform(8, seed=0), 1e-6, backend="particles", save_every=5e-7)
    assert traj.at(1e-6) is traj.states[-1]
    assert traj.at(5e-7 * (1 + 1e-12)) is traj.states[1]
    with pytest.raises(ValueError, match="must be a saved time"):
        traj.at(5e-10)


def test_a_run_saved_without_the_time_diagnostic_resumed_reads_its_times_there():
    # spectral runs record `t` since this version; the part of a resumed run saved by an older one has none, and
    # read NaN in the joined run's `t` (any other missing key is unknown there: NaN)
    from meanfield._simulate import _concatenate

    a = mf.simulate(mf.Model(1.0), mf.Density.uniform(8), 0.2, save_every=0.1)
    b = mf.simulate(mf.Model(1.0), a.final, 0.4, save_every=0.1, t0=0.2)
    del a.diagnostics["t"]
    ab = _concatenate(a, b)
    assert np.array_equal(ab.diagnostics["t"], ab.times)


def test_a_progress_bar_written_to_a_file_is_not_redrawn_ten_times_a_second(capsys, monkeypatch):
    # a batch job's log (stderr not a terminal) got a progress line every 0.1 s: ~1 kB/s over hours.  On a terminal
    # tqdm's default stays
    import sys
    import time as _time

    from meanfield._simulate import BATCH_LOG_INTERVAL, _Progress

    bar = _Progress(1.0, 0.0)
    assert bar.bar.mininterval == BATCH_LOG_INTERVAL
    for k in range(1, 11):
        bar.step(k / 10, 0.1)
        _time.sleep(0.12)
    bar.close()
    assert capsys.readouterr().err.count("\r") <= 3          # the first and the last line (tqdm: a redraw is '\r…')
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    on_terminal = _Progress(1.0, 0.0)
    assert on_terminal.bar.mininterval == 0.1
    on_terminal.close()


def test_a_state_on_another_sphere_than_the_model_is_told_how_to_build_the_model():
    # "the density has d=3 but the model has d=2" named the mismatch, not the fix (Model's `d`)
    with pytest.raises(ValueError, match=re.escape("the density has d=3 but the model has d=2 (a model on its "
                                                   "sphere: mf.Model(..., d=3))")):
        mf.simulate(mf.Model(1.0, d=2), mf.Density.uniform(4), 0.1)
    with pytest.raises(ValueError, match=re.escape("`initial` has d=3 but the model has d=2 (a model on the tokens' "
                                                   "sphere: mf.Model(..., d=3))")):
        mf.simulate(mf.Model(1.0, d=2), mf.Particles.uniform(5, seed=0), 0.1, backend="particles", step=0.1)
