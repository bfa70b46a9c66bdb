import dataclasses
import os
import warnings

import h5py
import numpy as np
import pytest

import meanfield as mf


@pytest.fixture
def trajectory():
    dens = mf.Density.random(12, seed=3, amplitude=0.5)
    return mf.simulate(mf.Model(2.0, "pre-ln"), dens, 0.5, save_every=0.25, r0=1.5)


def test_round_trip(tmp_path, trajectory):
    path = mf.save(trajectory, tmp_path / "r.h5")
    back = mf.load(path)
    assert np.array_equal(back.times, trajectory.times) and back.status is trajectory.status
    for a, b in zip(back.states, trajectory.states):
        assert np.array_equal(a.coeffs, b.coeffs) and np.array_equal(a.radius, b.radius)
    assert back.model == trajectory.model or back.model.beta == trajectory.model.beta
    assert set(back.diagnostics) == set(trajectory.diagnostics)
    with h5py.File(path) as f:   # self-describing: time is a dimension scale of the diagnostics
        assert f["diagnostics/energy"].dims[0][0].name == "/scales/t"
        assert f.attrs["format"] == "meanfield-trajectory" and "meanfield_version" in f.attrs


def test_particles_species_and_zonal_states_round_trip(tmp_path):
    from meanfield._io import _read_state, _write_state

    states = [mf.Particles.uniform(7, d=5, seed=1, radii=2.0),
              (mf.Density.uniform(4), mf.Density.uniform(4)),
              mf.ZonalDensity.uniform(5, d=6)]
    with h5py.File(tmp_path / "s.h5", "w") as f:
        for i, s in enumerate(states):
            _write_state(f.create_group(str(i)), s)
    with h5py.File(tmp_path / "s.h5") as f:
        p, sp, z = (_read_state(f[str(i)]) for i in range(3))
    assert np.array_equal(p.positions, states[0].positions) and np.array_equal(p.radii, states[0].radii)
    assert isinstance(sp, tuple) and len(sp) == 2 and z.d == 6


def test_atomic_write_leaves_no_temporary(tmp_path, trajectory):
    mf.save(trajectory, tmp_path / "r.h5")
    mf.save(trajectory, tmp_path / "r.h5")      # replacing an existing result
    assert sorted(os.listdir(tmp_path)) == ["r.h5"]


def test_damaged_files_give_a_clear_error(tmp_path, trajectory):
    path = mf.save(trajectory, tmp_path / "r.h5")
    data = path.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(mf.ResultFileError, match="truncated or corrupted"):
        mf.load(tmp_path / "truncated.h5")
    (tmp_path / "garbage.h5").write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(mf.ResultFileError, match="not a readable HDF5"):
        mf.load(tmp_path / "garbage.h5")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(mf.ResultFileError, match="not a meanfield result"):
        mf.load(tmp_path / "foreign.h5")
    with pytest.raises(mf.ResultFileError, match="does not exist"):
        mf.load(tmp_path / "missing.h5")
    with h5py.File(path, "a") as f:              # a state group lost
        del f["states/000001"]
    with pytest.raises(mf.ResultFileError, match="inconsistent"):
        mf.load(path)


def test_callable_alpha_needs_to_be_supplied(tmp_path):
    alpha = lambda t: 1.0 + 0 * t  # noqa: E731
    tr = mf.simulate(mf.Model(1.0, "ngpt", alpha=alpha), mf.Density.uniform(4), 0.1)
    path = mf.save(tr, tmp_path / "a.h5")
    with pytest.raises(mf.ResultFileError, match="callable alpha"):
        mf.load(path)
    assert mf.load(path, alpha=alpha).model.alpha is alpha


def test_checkpoint_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    model, dens = mf.Model(5.0), mf.Density.random(20, seed=2)
    kw = dict(save_every=0.25, on_resolution_loss="refine")
    full = mf.simulate(model, dens, 1.5, **kw)
    path = tmp_path / "ck.h5"
    part = mf.simulate(model, dens, 1.5, checkpoint=path, callback=lambda t, s, d: t >= 0.75 - 1e-12, **kw)
    assert part.status is mf.Status.CALLBACK_STOP and not mf._io.run_info(path)["complete"]
    resumed = mf.resume(path)
    assert resumed.success and np.array_equal(resumed.times, full.times)
    assert max(np.max(np.abs(a.coeffs - b.coeffs)) for a, b in zip(full.states, resumed.states)) <= 1e-14
    assert mf._io.run_info(path)["complete"] and len(mf.load(path)) == len(full)


def test_a_resumed_run_keeps_checkpointing(tmp_path):
    # killed once, resumed, killed again: the file must hold every state saved before the second kill
    model, dens = mf.Model(2.0), mf.Density.random(16, seed=1, amplitude=0.5)
    path = tmp_path / "ck.h5"
    mf.simulate(model, dens, 1.0, save_every=0.125, checkpoint=path, callback=lambda t, s, d: t >= 0.25 - 1e-12)
    seen = []       # checkpoint_every=1: after each saved state, whatever the write costs

    def kill_after_two(t, state, diagnostics):
        seen.append((t, len(mf.load(path))))        # what a kill at this moment would leave on disk
        if len(seen) == 3:
            raise KeyboardInterrupt
        return False

    resumed = mf.resume(path, callback=kill_after_two, checkpoint_every=1)
    assert resumed.status is mf.Status.INTERRUPTED
    assert [n for _, n in seen] == [4, 5, 6]           # t = 0, 0.125, 0.25 and each new save, as it was made
    assert not mf._io.run_info(path)["complete"] and len(mf.load(path)) == 6
    again = mf.resume(path)
    full = mf.simulate(model, dens, 1.0, save_every=0.125)
    assert again.success and np.array_equal(again.times, full.times)
    assert max(np.max(np.abs(a.coeffs - b.coeffs)) for a, b in zip(full.states, again.states)) <= 1e-14


def _checkpoint(tmp_path):
    """A checkpoint of a run stopped half-way (incomplete, resumable)."""
    path = tmp_path / "ck.h5"
    mf.simulate(mf.Model(2.0), mf.Density.random(16, seed=1, amplitude=0.5), 0.5, save_every=0.125,
                checkpoint=path, callback=lambda t, s, d: t >= 0.25 - 1e-12)
    return path


def test_a_flipped_byte_in_the_data_is_detected(tmp_path):
    """Every array carries a Fletcher-32 checksum: corrupted numbers are an error, not a silently wrong state."""
    path = _checkpoint(tmp_path)
    with h5py.File(path) as f:
        ds = f["states/000001/coeffs"]
        assert ds.fletcher32
        offset = ds.id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mf.ResultFileError, match="damaged or incomplete"):
        mf.load(path)
    with pytest.raises(mf.ResultFileError, match="damaged or incomplete"):
        mf.resume(path)


def test_resume_and_run_info_of_a_damaged_checkpoint_give_the_documented_error(tmp_path):
    path = _checkpoint(tmp_path)
    data = path.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(mf.ResultFileError, match="truncated or corrupted"):
        mf.resume(tmp_path / "truncated.h5")
    with h5py.File(path, "a") as f:           # the run group (t_final, remaining times) lost
        del f["run"]
        del f.attrs["attributes_sha256"]      # (as a file written before the attributes had a checksum)
    for read in (mf.resume, mf._io.run_info, mf.load):
        with pytest.raises(mf.ResultFileError, match="damaged or incomplete"):
            read(path)


def test_results_are_plain_numeric_arrays_and_object_dtypes_are_refused(tmp_path, trajectory):
    path = mf.save(trajectory, tmp_path / "r.h5")
    kinds = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: kinds.update({name: obj.dtype.kind}) if isinstance(obj, h5py.Dataset) else None)
    assert kinds and set(kinds.values()) <= set("biufc"), kinds
    back = mf.load(path)
    arrays = [back.times, *back.diagnostics.values(), *back.steps.values()]
    arrays += [a for s in back.states for a in (s.coeffs, s.radius) if a is not None]
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays)
    with h5py.File(path, "a") as f:           # a string dataset where numbers belong: never read as objects
        del f["states/000000/coeffs"]
        f.create_dataset("states/000000/coeffs", data=[b"1", b"2"], dtype=h5py.string_dtype())
    with pytest.raises(mf.ResultFileError, match="not a numeric dataset"):
        mf.load(path)


def test_a_checkpoint_of_a_running_or_killed_run_reads_as_incomplete(tmp_path):
    # checkpoints are written with the status of the steps so far ("OK"); read back mid-run (as after a
    # SIGKILL) they must not claim to have reached t_final
    path, seen = tmp_path / "ck.h5", []

    def peek(t, state, diags):
        if t >= 0.25 - 1e-12 and not seen:
            seen.append(mf.load(path))
        return False
    done = mf.simulate(mf.Model(2.0), mf.Density.random(16, seed=1, amplitude=0.5), 0.5, save_every=0.125,
                       checkpoint=path, callback=peek)
    mid = seen[0]
    assert mid.status is mf.Status.INCOMPLETE and not mid.success
    assert "of t_final = 0.5" in mid.detail and "resume" in mid.message
    assert done.status is mf.Status.OK and mf.load(path).status is mf.Status.OK


def test_an_in_memory_run_is_saved_with_its_t_final(tmp_path, trajectory, capsys):
    # mf.save without run_info: t_final is the last saved time, so `meanfield info` shows it and
    # mf.resume can read the file back and extend it (it used to store no t_final: "None", KeyError)
    import warnings

    from meanfield._io import run_info
    from meanfield.cli import main

    path = mf.save(trajectory, tmp_path / "r.h5")
    assert run_info(path)["t_final"] == trajectory.times[-1] == 0.5
    assert main(["info", str(path)]) == 0
    assert "t_final: 0.5," in capsys.readouterr().out
    same = mf.resume(path)                                   # complete at its t_final: nothing to do
    np.testing.assert_array_equal(same.times, trajectory.times)
    with warnings.catch_warnings():                          # the tail warning of β = 2 at lmax = 12 after t = 0.5
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        longer = mf.resume(path, t_final=0.75)               # extended with the last spacing
    np.testing.assert_allclose(longer.times, [0.0, 0.25, 0.5, 0.75])
    assert longer.success and run_info(path)["t_final"] == 0.75
    # other run attributes keep the default; an explicit t_final is kept as given
    assert run_info(mf.save(trajectory, tmp_path / "s.h5", run_info={"seed": 3}))["t_final"] == 0.5
    assert run_info(mf.save(trajectory, tmp_path / "t.h5", run_info={"t_final": 2.0}, complete=False))["t_final"] == 2.0


def test_files_with_an_alpha_the_scheme_never_used_still_load(tmp_path):
    # before Model refused alpha for schemes without a step size, such runs stored it
    import h5py
    path = tmp_path / "old.h5"
    mf.save(mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.1), path)
    with h5py.File(path, "r+") as f:
        groups = []
        f.visititems(lambda name, obj: groups.append(obj) if name.endswith("model") else None)
        for g in groups:
            g.attrs["alpha"] = 0.5
        del f.attrs["attributes_sha256"]      # those files had no checksum of their attributes
    assert mf.load(path).model.alpha == 1.0


def test_json_attributes_are_strict_and_non_finite_values_round_trip():
    import json
    from meanfield._io import json_text, json_value
    value = {"max_step": float("inf"), "low": -np.inf, "x": [1.5, float("nan"), np.float32(2.0)], "s": "inf-ish"}
    text = json_text(value)
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))    # no Infinity / NaN tokens
    back = json_value(text)
    assert back["max_step"] == np.inf and back["low"] == -np.inf and np.isnan(back["x"][1])
    assert back["x"][2] == 2.0 and back["s"] == "inf-ish"
    assert json_value('{"max_step": Infinity}')["max_step"] == np.inf       # files written before read the same


def test_the_stored_options_of_a_run_are_strict_json(tmp_path):
    import h5py
    import json
    path = tmp_path / "r.h5"
    tr = mf.simulate(mf.Model(1.0), mf.Density.uniform(12), 0.1, checkpoint=path)
    with h5py.File(path) as f:
        text = f["run"].attrs["options"]
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert mf.load(path).options["max_step"] == np.inf == tr.options["max_step"]


def test_a_loaded_checkpoint_saved_elsewhere_can_still_be_resumed(tmp_path):
    first, copy = tmp_path / "ck.h5", tmp_path / "copy.h5"
    p = mf.Particles.uniform(30, seed=2)
    mf.simulate(mf.Model(2.0), p, 1.0, backend="particles", save_every=0.25, checkpoint=first,
                metadata={"config": "[model]\nbeta = 2.0\n", "seed": 7}, callback=lambda t, s, d: t >= 0.5 - 1e-12)
    loaded = mf.load(first)
    assert loaded.status is mf.Status.CALLBACK_STOP
    assert loaded.run_info["seed"] == 7 and loaded.run_info["t_final"] == 1.0 and not loaded.run_info["complete"]
    assert loaded.run_info["config"].startswith("[model]") and loaded.run_info["remaining_times"] == [0.75, 1.0]
    mf.save(loaded, copy)
    assert mf.load(copy).run_info == loaded.run_info
    a, b = mf.resume(first), mf.resume(copy)
    assert a.success and b.success and np.array_equal(a.times, b.times)
    assert np.array_equal(a.final.positions, b.final.positions)
    assert mf.load(copy).run_info["complete"] and mf.load(copy).run_info["seed"] == 7


def test_metadata_arrays_and_tuples_round_trip(tmp_path):
    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=1), 0.1, backend="particles", checkpoint=path,
                metadata={"grid": (3, 4), "ells": np.arange(3), "one": np.float64(2.5), "text": "a b"})
    info = mf.load(path).run_info
    assert info["grid"] == [3, 4] and info["ells"] == [0, 1, 2] and info["one"] == 2.5 and info["text"] == "a b"


def test_a_run_kept_in_memory_and_saved_extends_as_its_checkpoint_would(tmp_path):
    # the in-memory run had no record of its step size: extending the saved file differed by 2.7e-8 (rtol 1e-5)
    model, p = mf.Model(beta=4.0), mf.Particles.uniform(100, seed=0)
    opts = dict(backend="particles", rtol=1e-5, save_every=0.5, threads=1)
    full = mf.simulate(model, p, 2.0, **opts)
    short = mf.simulate(model, p, 1.0, **opts)
    assert short.run_info["complete"] and short.run_info["resume"]["first_step"] > 0
    extended = mf.resume(mf.save(short, tmp_path / "mem.h5"), t_final=2.0)
    assert max(np.abs(a.positions - b.positions).max() for a, b in zip(full.states, extended.states)) < 1e-14


def test_a_hybrid_run_resumed_after_its_hand_off_matches_the_uninterrupted_run(tmp_path):
    # after the hand-off the stored resume options were empty: the particle phase restarted its step size (4e-8)
    model, rho = mf.Model(5.0), mf.Density.random(24, seed=2, amplitude=0.7)
    opts = dict(backend="hybrid", oversample=1, particle_options={"rtol": 1e-5}, save_every=0.5)
    full = mf.simulate(model, rho, 2.0, **opts)
    path = tmp_path / "h.h5"
    mf.simulate(model, rho, 1.0, checkpoint=path, **opts)
    extended = mf.resume(path, t_final=2.0)
    assert full.diagnostics["phase"][2] == 1.0                       # handed off by t = 1
    assert max(np.abs(a.positions - b.positions).max() for a, b in zip(full.states[2:], extended.states[2:])) < 1e-13
    # the same steps: the step-size controller turns the ~1e-15 state differences into ~1e-11 in dt
    assert len(full.steps["dt"]) == len(extended.steps["dt"])
    np.testing.assert_allclose(extended.steps["dt"], full.steps["dt"], rtol=1e-9, atol=0)


def test_an_old_hybrid_checkpoint_with_unused_particle_options_still_resumes(tmp_path):
    # checkpoints written before the refusal of options a fixed-step run ignores stored them in particle_options
    import json

    import h5py
    model, rho = mf.Model(5.0), mf.Density.random(24, seed=2, amplitude=0.7)
    path = tmp_path / "old.h5"
    mf.simulate(model, rho, 1.0, backend="hybrid", oversample=1, save_every=0.5, checkpoint=path,
                particle_options={"method": "rk4", "step": 0.05})
    with h5py.File(path, "r+") as f:
        options = json.loads(f["run"].attrs["options"])
        options["particle_options"]["rtol"] = 1e-8
        f["run"].attrs["options"] = json.dumps(options)
        del f.attrs["attributes_sha256"]      # those files had no checksum of their attributes
    assert mf.resume(path, t_final=1.5).success


def test_only_this_files_stale_temporaries_of_this_host_are_removed(tmp_path, trajectory):
    # the glob was not escaped: saving r[1].h5 removed r1.h5's temporary and left its own
    import subprocess
    import sys

    from meanfield._io import _HOST
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    own = tmp_path / f".r[1].h5.tmp-{_HOST}-{dead.pid}"
    other_file = tmp_path / f".r1.h5.tmp-{_HOST}-{dead.pid}"
    other_host = tmp_path / f".r[1].h5.tmp-elsewhere-{dead.pid}"
    for p in (own, other_file, other_host):
        p.write_bytes(b"x")
    mf.save(trajectory, tmp_path / "r[1].h5")
    assert not own.exists() and other_file.exists() and other_host.exists()


# ----------------------------------------------------------------------------------------------
# bad arguments of save and load: named, before anything is written; never blamed on the file

@pytest.mark.parametrize("target, error, match", [
    ("nope/r.h5", ValueError, r"`path` must be a file in an existing folder; .*the folder .*nope' does not exist"),
    (".", ValueError, r"`path` must be a file path, not a folder"),
    (5, TypeError, r"`path` must be a file path \(a str or pathlib.Path\); got path=5"),
])
def test_save_refuses_a_path_it_cannot_write(tmp_path, trajectory, target, error, match):
    """h5py's "Unable to synchronously create file", IsADirectoryError and pathlib's TypeError before."""
    with pytest.raises(error, match=match):
        mf.save(trajectory, tmp_path / target if isinstance(target, str) else target)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(run_info=[1]), TypeError, r"`run_info` must be a dict"),
    (dict(run_info={"a": object()}), TypeError, r"`run_info` values must be strings, numbers or booleans"),
    (dict(run_info={"a": [1, object()]}), TypeError, r"`run_info` values must be .*run_info\['a'\]"),
    (dict(run_info={1: 2}), TypeError, r"`run_info` keys must be non-empty strings"),
    (dict(run_info={"options": "{}"}), ValueError, r"`run_info` key 'options' is reserved"),
    (dict(complete="x"), TypeError, r"`complete` must be True, False or None .*got complete='x'"),
    # resume read these as the run's end, and failed with "could not convert string to float" / "`t_eval` must be"
    (dict(run_info={"t_final": "abc"}), ValueError, r"`run_info` t_final must be a finite number ≥ the last saved "
                                                    r"time 0.5 .*got t_final='abc'"),
    (dict(run_info={"t_final": 0.1}), ValueError, r"`run_info` t_final must be .* ≥ the last saved time 0.5"),
])
def test_save_refuses_bad_run_info_and_complete(tmp_path, trajectory, kwargs, error, match):
    with pytest.raises(error, match=match):
        mf.save(trajectory, tmp_path / "r.h5", **kwargs)
    assert not (tmp_path / "r.h5").exists()


def test_save_accepts_what_a_file_records(tmp_path, trajectory):
    info = {"config": "[model]", "seed": 3, "t_final": 0.5, "flag": True, "x": np.float64(2.5),
            "nested": {"a": [1, 2.0, "s", float("inf")]}, "arr": np.arange(3)}
    mf.save(trajectory, tmp_path / "r.h5", run_info=info, complete=np.bool_(False))
    back = mf._io.run_info(tmp_path / "r.h5")
    assert back["seed"] == 3 and back["nested"] == {"a": [1, 2.0, "s", float("inf")]} and back["arr"] == [0, 1, 2]
    assert back["complete"] is False


def test_a_bad_alpha_is_an_argument_error_not_a_damaged_file(tmp_path):
    """load(path, alpha=-1) raised ResultFileError "file is damaged or incomplete"."""
    path = mf.save(mf.simulate(mf.Model(1.0, "ngpt", alpha=0.5), mf.Density.uniform(4), 0.1), tmp_path / "n.h5")
    for alpha, error in ((-1, ValueError), ("x", TypeError), (float("nan"), ValueError)):
        with pytest.raises(error, match=r"`alpha` must be") as info:
            mf.load(path, alpha=alpha)
        assert not isinstance(info.value, mf.ResultFileError)
    assert mf.load(path, alpha=0.25).model.alpha == 0.25 and mf.load(path).model.alpha == 0.5
    post = mf.save(mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.1), tmp_path / "p.h5")
    with pytest.raises(ValueError, match=r"`alpha` does not fit the run in the file: `alpha` is only used by") as info:
        mf.load(post, alpha=0.5)                      # a scheme without α: the argument, not the file
    assert not isinstance(info.value, mf.ResultFileError)
    with pytest.raises(ValueError, match=r"`alpha` must be finite and > 0") as info:
        mf.resume(path, alpha=-1)
    assert not isinstance(info.value, mf.ResultFileError)


def test_a_corrupted_attribute_is_an_error_not_a_different_model(tmp_path):
    # one flipped bit of /model beta read 4.25 for 4.0, and --resume finished the run at it
    import h5py

    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(4.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path)
    assert mf.load(path).model.beta == 4.0
    with h5py.File(path, "r+") as f:
        key = next(k for k in f["model"].attrs if "beta" in k)
        f["model"].attrs[key] = 4.25
    with pytest.raises(mf.ResultFileError, match="attributes .* do not match their checksum"):
        mf.load(path)


def test_the_attribute_digest_covers_user_metadata_of_any_case(tmp_path):
    # all-caps keys were skipped as HDF5's own: metadata={"N": 1000} edited to 1001 loaded without error
    import h5py

    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path,
                metadata={"N": 1000})
    with h5py.File(path, "r+") as f:
        f["run"].attrs["N"] = 1001
    with pytest.raises(mf.ResultFileError, match="do not match their checksum"):
        mf.load(path)


def test_a_renamed_dataset_is_an_error_not_a_missing_diagnostic(tmp_path):
    # a flipped byte of a name turned mass_error into mass_esror, and diagnostics["mass_error"] raised KeyError
    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path)
    with h5py.File(path, "r+") as f:
        name = sorted(f["diagnostics"])[0]
        f.move(f"diagnostics/{name}", f"diagnostics/{name}x")
    with pytest.raises(mf.ResultFileError, match="names and types of its datasets do not match"):
        mf.load(path)


def test_files_with_the_first_digest_still_load(tmp_path):
    from meanfield import _io

    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path)
    with h5py.File(path, "r+") as f:          # as meanfield wrote it before the digest covered the datasets
        del f.attrs[_io._DIGEST_VERSION]
        f.attrs[_io._ATTRS_DIGEST] = _io._attributes_digest(f, 1)
    assert mf.load(path).times[-1] == pytest.approx(0.2)


def test_a_number_type_damaged_in_the_header_is_an_error_not_other_numbers(tmp_path):
    # Fletcher-32 covers the data, not the type: one flipped bit of the exponent bias read t = 2, 4, … for 1, 2, …
    from meanfield import _io

    tid = h5py.h5t.IEEE_F64LE.copy()
    tid.set_ebias(tid.get_ebias() - 1)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        space = h5py.h5s.create_simple((3,))
        h5py.Dataset(h5py.h5d.create(f.id, b"t", tid, space)).write_direct(np.array([0.0, 1.0, 2.0]))
        assert f["t"].dtype.kind == "f"                    # h5py reads it as a float (of another size)
        with pytest.raises(mf.ResultFileError, match="damaged: its stored number type is not the plain"):
            _io._array(f["t"])


def test_a_header_hdf5_cannot_walk_is_a_result_file_error(tmp_path, monkeypatch):
    from meanfield import _io

    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 0.2, backend="particles", checkpoint=path)

    def damaged(f, version=2):
        raise RuntimeError("Object visitation failed (dataspace dim 0 size of 281474976711059 is greater than maxdim)")

    monkeypatch.setattr(_io, "_attributes_digest", damaged)
    with pytest.raises(mf.ResultFileError, match="is damaged: RuntimeError: Object visitation failed"):
        mf.load(path)


def test_resume_options_are_checked_against_the_run(tmp_path):
    # options on a complete run were ignored without a word; adaptive options of a fixed-step run, and spectral
    # options of a hybrid run past its hand-off, were accepted, recorded, and never used
    path = tmp_path / "c.h5"
    mf.simulate(mf.Model(2.0), mf.Particles.uniform(40, seed=0), 0.4, backend="particles", step=0.1,
                save_every=0.2, checkpoint=path)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['no_such'\]"):
        mf.resume(path, options={"chunk": 64, "no_such": 1})
    with pytest.raises(ValueError, match="is complete: give `t_final`"):
        mf.resume(path, options={"step": 0.05})
    with pytest.raises(ValueError, match=r"\['rtol'\] would be ignored: method='rk4'"):
        mf.resume(path, t_final=0.6, options={"rtol": 1e-3})
    assert mf.resume(path, t_final=0.6, options={"step": 0.05, "rtol": None}).options["step"] == 0.05   # None: unset


def test_resume_option_none_sets_the_backend_default(tmp_path):
    # `none` was documented as unsetting an option, but reached the backend as a value: "`rtol` must be a real number"
    from meanfield._simulate import get_backend

    path = tmp_path / "s.h5"
    mf.simulate(mf.Model(1.0), mf.Density.random(16, seed=0, amplitude=0.3), 0.2, rtol=1e-4, max_steps=10_000,
                checkpoint=path)
    r = mf.resume(path, t_final=0.3, options={"rtol": None, "max_steps": None, "lmax": None})
    default = get_backend("spectral").option_defaults()
    assert r.success and r.options["rtol"] == default["rtol"] and r.options["max_steps"] == default["max_steps"]
    assert mf.load(path).options["rtol"] == default["rtol"]


def test_resume_of_a_handed_off_hybrid_run_takes_particle_options_merged(tmp_path):
    path = tmp_path / "h.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        h = mf.simulate(mf.Model(5.0), mf.Density.random(16, seed=2, amplitude=0.7), 3.0, backend="hybrid",
                        save_every=1.0, checkpoint=path, particle_options={"rtol": 1e-8})
    assert isinstance(h.final, mf.Particles)
    with pytest.raises(ValueError, match=r"\['rtol'\] would be ignored: this hybrid run has handed off"):
        mf.resume(path, t_final=3.5, options={"rtol": 1e-2})
    r = mf.resume(path, t_final=3.5, options={"particle_options": {"atol": 1e-6}})
    assert r.success and mf.load(path).options["particle_options"] == {"rtol": 1e-8, "atol": 1e-6}
    with pytest.raises(ValueError, match=r"\(particle_options\): option\(s\) \['atol'\] would be ignored: method='rk4'"):
        mf.resume(path, t_final=4.0, options={"particle_options": {"method": "rk4", "step": 0.05, "atol": 1e-6}})
    r = mf.resume(path, t_final=3.7, options={"particle_options": {"method": "rk4", "step": 0.05}})
    assert r.success and mf.load(path).options["particle_options"] == {"method": "rk4", "step": 0.05}   # no rtol


def _killed_copies(monkeypatch, tmp_path):
    """Copies of a checkpoint as each write left it on disk: what a SIGKILL right after that write would leave."""
    import shutil

    from meanfield import _io
    copies, write = [], _io.save_checkpoint

    def save_and_copy(trajectory, path, point):
        out = write(trajectory, path, point)
        copies.append(shutil.copy(path, tmp_path / f"killed-{len(copies)}.h5"))
        return out
    monkeypatch.setattr(_io, "save_checkpoint", save_and_copy)
    return copies


def _mid_interval(copies):
    """The first copy holding a resume point (a kill between two save times)."""
    from meanfield._io import read_resume_point
    return next(c for c in copies if read_resume_point(c) is not None)


# a spectral run with a filter: a dozen steps, several of them between two save times
_FILTERED = dict(model=mf.Model(5.0), initial=mf.Density.random(16, seed=1, amplitude=0.5), t_final=1.0,
                 save_every=0.5, filter=(36.0, 8), rtol=1e-10)


def test_run_counts_of_a_run_killed_and_resumed_equal_the_uninterrupted_ones(tmp_path, monkeypatch):
    # filtered_steps restarted at 0 on resume (a resumed run reported 5 filtered steps of 12 at rtol=1e-7); the step log, and so
    # the steps taken and the rejected trial steps, already went on across a resume
    warnings.simplefilter("ignore", mf.MeanfieldWarning)
    full = mf.simulate(**_FILTERED)
    assert full.diagnostics["filtered_steps"][-1] == full.steps["filtered"].sum() == len(full.steps["t"]) > 10
    stopped = tmp_path / "stopped.h5"       # stopped at a save time (a Ctrl-C, a callback)
    mf.simulate(**_FILTERED, checkpoint=stopped, callback=lambda t, s, d: t >= 0.5)
    copies = _killed_copies(monkeypatch, tmp_path)
    mf.simulate(**_FILTERED, checkpoint=tmp_path / "run.h5", checkpoint_interval=0)
    killed = _mid_interval(copies)          # killed between two save times
    monkeypatch.undo()
    for path in (stopped, killed):
        resumed = mf.resume(path)
        assert resumed.success and np.array_equal(resumed.times, full.times)
        np.testing.assert_array_equal(resumed.diagnostics["filtered_steps"], full.diagnostics["filtered_steps"])
        assert len(resumed.steps["t"]) == len(full.steps["t"])
        np.testing.assert_array_equal(resumed.steps["rejected"], full.steps["rejected"])
        assert np.array_equal(mf.load(path).diagnostics["filtered_steps"], full.diagnostics["filtered_steps"])


def test_max_steps_is_the_budget_of_the_whole_run_resumes_included(tmp_path, monkeypatch):
    # a resumed run counted its steps from its restart: killed and resumed, a run with max_steps=7 took 12 steps and
    # reached t_final, where the uninterrupted one stopped after 7 (rtol=1e-7)
    warnings.simplefilter("ignore", mf.MeanfieldWarning)
    n = len(mf.simulate(**_FILTERED).steps["t"])
    budget = dict(_FILTERED, max_steps=n - 3)
    full = mf.simulate(**budget)
    assert full.status is mf.Status.STEP_TOO_SMALL and len(full.steps["t"]) == n - 3
    stopped = tmp_path / "stopped.h5"
    mf.simulate(**budget, checkpoint=stopped, callback=lambda t, s, d: t >= 0.5)
    copies = _killed_copies(monkeypatch, tmp_path)
    mf.simulate(**budget, checkpoint=tmp_path / "run.h5", checkpoint_interval=0)
    killed = _mid_interval(copies)
    monkeypatch.undo()
    for path in (stopped, killed):
        resumed = mf.resume(path)
        assert resumed.status is mf.Status.STEP_TOO_SMALL and resumed.detail == full.detail
        assert np.array_equal(resumed.times, full.times) and len(resumed.steps["t"]) == n - 3
        # a larger budget (of the whole run) lets it go on to t_final, as an uninterrupted run with it
        more = mf.resume(path, options={"max_steps": n})
        assert more.success and len(more.steps["t"]) == n
    assert f"max_steps={n - 3} steps taken" in full.detail and "the whole run" in full.detail


def test_a_fixed_step_extension_beyond_max_steps_is_refused_counting_the_whole_run(tmp_path):
    path = tmp_path / "r.h5"
    mf.simulate(mf.Model(1.0), mf.Density.uniform(12), 0.2, method="rk4", step=0.02, max_steps=15, checkpoint=path)
    with pytest.raises(ValueError, match=r"\(t_final − t0\)/15 .*takes 20 steps from t0=0 to t_final=0.4"):
        mf.resume(path, t_final=0.4)
    assert mf.resume(path, t_final=0.4, options={"max_steps": 20}).success


def test_save_with_run_info_keeps_the_runs_own_record(tmp_path):
    from meanfield._io import run_info

    # run_info={"note": ...} replaced the run's record: the file of a run stopped at t = 0.2 of t_final = 4 read
    # t_final = 0.2, no save times to come, and resume called it complete
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        stopped = mf.simulate(mf.Model(1.0), mf.Density.random(16, seed=1, degree=3), 4.0, save_every=1.0,
                              max_steps=3)
        assert stopped.status is mf.Status.STEP_TOO_SMALL
        path = mf.save(stopped, tmp_path / "noted.h5", run_info={"note": "first try"})
        info = run_info(path)
        assert info["note"] == "first try" and info["t_final"] == 4.0 and not info["complete"]
        assert info["remaining_times"] == [1.0, 2.0, 3.0, 4.0] and info["resume"] == stopped.run_info["resume"]
        plain = mf.resume(mf.save(stopped, tmp_path / "plain.h5"), options={"max_steps": 10**7})
        noted = mf.resume(path, options={"max_steps": 10**7})
    assert np.array_equal(noted.times, plain.times) and noted.times[-1] > 1
    assert run_info(path)["note"] == "first try"


def test_an_hdf5_file_of_other_data_is_not_replaced_by_a_result(tmp_path, trajectory):
    # only a non-HDF5 file was refused: mf.save(t, "data.h5") or checkpoint="data.h5" replaced an experiment's data
    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as f:
        f["experiment"] = np.arange(10)
    before = data.read_bytes()
    with pytest.raises(ValueError, match=r"`path`=.*data.h5' is an existing HDF5 file that is not a meanfield result"):
        mf.save(trajectory, data)
    with pytest.raises(ValueError, match=r"`checkpoint`=.*is an existing HDF5 file that is not a meanfield result"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 0.1, checkpoint=data)
    assert data.read_bytes() == before
    result = mf.save(trajectory, tmp_path / "r.h5")
    assert mf.save(trajectory, result) == result            # an earlier result is replaced, as before


@pytest.mark.parametrize("given", [(36, 8), [36.0, 8], np.array([36.0, 8.0])])
def test_the_filter_option_reads_back_as_the_run_holds_it(tmp_path, given):
    # the run kept `filter` as given (a list, or numpy scalars) and the file read it back as a JSON list: a filtered
    # run's options differed from its own file's (tr.options != mf.load(path).options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0), mf.Density.random(12, seed=1, degree=2), 0.05, filter=given)
    assert tr.options["filter"] == (36.0, 8.0) and all(type(v) is float for v in tr.options["filter"])
    back = mf.load(mf.save(tr, tmp_path / "f.h5"))
    assert back.options == tr.options and isinstance(back.options["filter"], tuple)


def test_a_run_equals_the_trajectory_read_back_from_its_file(tmp_path):
    # `traj == mf.load(path)` raised "The truth value of an array with more than one element is ambiguous" (the
    # dataclass comparison of `times`): a run could not be compared with its own file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        rho = mf.Density.random(12, seed=1, degree=2)
        one = mf.Density.from_function(lambda x: rho.evaluate(x) / 2, 12, radius=1.0)
        runs = [mf.simulate(mf.Model(2.0, "pre-ln"), [one, one.with_coeffs(one.coeffs, 2 * one.radius)], 0.2,
                            save_every=0.1),
                mf.simulate(mf.Model(2.0, Q=np.diag([1.0, 0.5, 1.0])), rho, 0.1),         # energy NaN throughout
                mf.simulate(mf.Model(2.0, d=5), mf.ZonalDensity.from_function(np.exp, 12, d=5, normalize=True), 0.2),
                mf.simulate(mf.Model(2.0, "peri-ln", d=4), mf.Particles.uniform(20, d=4, seed=1), 0.2,
                            backend="particles", save_every=0.1),
                mf.simulate(mf.Model(2.0), rho, 0.2, checkpoint=tmp_path / "c.h5", metadata={"seeds": np.arange(3)})]
    for i, run in enumerate(runs):
        back = mf.load(mf.save(run, tmp_path / f"{i}.h5"))
        assert run == back and back == run and not run != back, run
    assert runs[-1] == mf.load(tmp_path / "c.h5")
    last = runs[-1].states[-1]
    other = dataclasses.replace(runs[-1], states=runs[-1].states[:-1] + [last.with_coeffs(last.coeffs * 1.001)])
    assert other != runs[-1] and runs[0] != runs[1] and runs[0] != "a run"
    with pytest.raises(TypeError, match="unhashable type: 'Trajectory'"):
        hash(runs[0])


def test_a_result_file_says_what_its_state_arrays_mean(tmp_path):
    """Read with h5py alone, a state was a complex array of length 153 and attrs lmax, d: nothing said which
    coefficients, in which order or normalization.  /states now carries that as its attribute `layout`, and the
    order it states is the one the arrays have (checked by rebuilding ρ at a point from the coefficients)."""
    from scipy.special import sph_harm_y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0), mf.Density.random(6, seed=2, degree=3), 0.05)
    path = mf.save(tr, tmp_path / "r.h5")
    with h5py.File(path) as f:
        layout = f["states"].attrs["layout"]
        last = f["states"][sorted(f["states"])[-1]]
        c, lmax = last["coeffs"][()], int(last.attrs["lmax"])
    assert "ducc0 order (m-major: (l,m) = (0,0), (1,0), …, (L,0), (1,1)" in layout and "sqrt(4 pi)" in layout
    ell = np.concatenate([np.arange(m, lmax + 1) for m in range(lmax + 1)])      # the order the text gives
    em = np.concatenate([np.full(lmax + 1 - m, m) for m in range(lmax + 1)])
    theta, phi = 1.1, 0.4
    y = sph_harm_y(ell, em, theta, phi)
    value = np.real(np.sum(c[em == 0] * y[em == 0]) + 2 * np.sum(c[em > 0] * y[em > 0]))
    point = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
    assert value == pytest.approx(tr.final.evaluate(point), rel=1e-12)
    assert mf.load(path) == tr                         # the attribute changes nothing that is read back


def test_resume_of_a_run_with_a_function_alpha_names_its_own_alpha_argument(tmp_path):
    # resume(path) said "pass `alpha=` to load()": the user called resume, which takes alpha= itself
    alpha = lambda t: 1.0 / (1.0 + t)  # noqa: E731
    path = tmp_path / "a.h5"
    mf.simulate(mf.Model(1.0, "ngpt", alpha=alpha), mf.Density.uniform(4), 0.2, checkpoint=path,
                callback=lambda t, s, d: True, save_every=0.1)
    with pytest.raises(mf.ResultFileError, match=r"pass `alpha=` to load\(\) \(or to resume\(\)"):
        mf.resume(path)
    assert mf.resume(path, alpha=alpha).success


def _ensemble_with_a_stopped_replica():
    # pre-ln with V = −I drives a radius to 0 in one of these replicas (NON_FINITE at t ≈ 1.6): NaN values, counts
    # below R, a status that is not OK
    def sampler(rng):
        return mf.Particles.uniform(20, 3, seed=rng, radii=rng.uniform(0.3, 3.0))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        return mf.ensemble(mf.Model(3.0, "pre-ln", V=-np.eye(3)), sampler, 2.0, replicas=8, seed=2, save_every=0.5,
                           step=0.01, batch=False, observable=lambda p: np.array([p.radii.mean(), p.radii.min()]),
                           interval="bootstrap", confidence=0.9)


def _bits(a):
    a = np.asarray(a)
    return a.dtype.str, a.shape, a.tobytes()


def test_an_ensemble_result_is_saved_and_loads_back_equal(tmp_path):
    """An EnsembleResult could not be saved (TypeError): an hour of replicas was kept only as the batched run's
    checkpoint.  Its file holds every array bit for bit, the seeds (a replica's tokens are drawn again from the
    loaded seed), the statuses, the bootstrap seed and the provenance."""
    runs = [mf.ensemble(mf.Model(2.0), 12, 0.4, replicas=3, seed=5, save_every=0.2, step=0.1),
            _ensemble_with_a_stopped_replica()]
    assert not runs[1].success and np.isnan(runs[1].values).any() and runs[1].bootstrap_seed is not None
    for i, r in enumerate(runs):
        back = mf.load(mf.save(r, tmp_path / f"e{i}.h5"))
        assert isinstance(back, mf.EnsembleResult) and back == r
        for k in ("times", "values", "mean", "std", "ci_low", "ci_high", "count"):
            assert _bits(getattr(back, k)) == _bits(getattr(r, k)), k
        assert [s.state for s in back.seeds] == [s.state for s in r.seeds]
        assert back.statuses == r.statuses and back.confidence == r.confidence and back.interval == r.interval
        assert (None if r.bootstrap_seed is None else r.bootstrap_seed.state) == (
            None if back.bootstrap_seed is None else back.bootstrap_seed.state)
        assert (back.model, back.backend, back.options, back.t0, back.t_final, back.observable, back.sampler,
                back.batched) == (r.model, r.backend, r.options, r.t0, r.t_final, r.observable, r.sampler, r.batched)
    back = mf.load(tmp_path / "e0.h5")
    redrawn = mf.Particles.uniform(12, seed=np.random.default_rng(back.seeds[1]))
    assert mf.mean_alignment(redrawn) == back.values[1, 0]
    with h5py.File(tmp_path / "e1.h5") as f:       # self-describing for a plain HDF5 reader
        assert f.attrs["format"] == "meanfield-ensemble" and f.attrs["replicas"] == 8
        assert f["values"].dims[1][0].name == "/scales/t" and f["mean"].dims[0][0].name == "/scales/t"
        assert "SeedSequence" in f["seeds"].attrs["layout"]


def test_an_ensemble_file_keeps_a_callable_option_as_its_name_and_a_callable_alpha_needs_alpha(tmp_path):
    def schedule(t):
        return 0.5

    seeds = np.random.SeedSequence(0).spawn(2)
    r = mf.EnsembleResult(np.array([0.0, 1.0]), np.zeros((2, 2)), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2),
                          np.array([2, 2]), 0.95, seeds, [mf.Status.OK] * 2,
                          model=mf.Model(1.0, "ngpt", alpha=schedule),
                          backend="particles", options={"hook": schedule, "step": 0.1})
    path = mf.save(r, tmp_path / "c.h5")
    with pytest.raises(mf.ResultFileError, match=r"callable alpha .*pass `alpha=` to load"):
        mf.load(path)
    back = mf.load(path, alpha=schedule)
    assert back.options == {"hook": "<callable schedule>", "step": 0.1}      # as a trajectory's file holds it
    assert back == dataclasses.replace(r, options=back.options)


def _hand_built(**changes):
    R, T = 3, 2
    fields = dict(times=np.array([0.0, 1.0]), values=np.zeros((R, T)), mean=np.zeros(T), std=np.zeros(T),
                  ci_low=np.zeros(T), ci_high=np.zeros(T), count=np.full(T, R), confidence=0.95,
                  seeds=np.random.SeedSequence(0).spawn(R), statuses=[mf.Status.OK] * R)
    return mf.EnsembleResult(**{**fields, **changes})


@pytest.mark.parametrize("changes, error, match", [
    (dict(mean=np.zeros(3)), ValueError, r"EnsembleResult.mean must be of shape \(2,\) .*got shape \(3,\)"),
    (dict(values=np.zeros((3, 5))), ValueError, r"EnsembleResult.values must be of shape \(R, T, \.\.\.\) with R >= 1 "
                                                r"and T = 2 \(len\(times\)\); got shape \(3, 5\)"),
    (dict(ci_high=np.zeros((2, 2))), ValueError, r"EnsembleResult.ci_high must be of shape \(2,\)"),
    (dict(count=np.array([3, 4])), ValueError,
     r"EnsembleResult.count must be of shape \(2,\) with values in \[0, R=3\]"),
    (dict(count=np.array([3.0, 3.0])), TypeError, r"EnsembleResult.count must be an array of integers"),
    (dict(seeds=np.random.SeedSequence(0).spawn(2)), ValueError, r"EnsembleResult.seeds must be a list of R=3 numpy "
                                                                 r"SeedSequences"),
    (dict(statuses=["OK"] * 3), TypeError, r"EnsembleResult.statuses must be a list of R=3 meanfield.Status"),
    (dict(interval="z"), ValueError, r"EnsembleResult.interval must be one of 't', 'bootstrap'"),
    (dict(t0=float("nan")), TypeError, r"EnsembleResult.t0 must be a finite number or None"),
    (dict(options={"f": object()}), TypeError, r"cannot store option value"),
])
def test_an_inconsistent_ensemble_result_is_refused_before_anything_is_written(tmp_path, changes, error, match):
    path = mf.save(_hand_built(), tmp_path / "e.h5")
    before = path.read_bytes()
    with pytest.raises(error, match=match):
        mf.save(_hand_built(**changes), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["e.h5"]


def test_an_ensemble_file_is_no_run_to_resume_and_takes_no_run_record(tmp_path):
    path = mf.save(_hand_built(), tmp_path / "e.h5")
    assert mf.load(path) == _hand_built()
    with pytest.raises(ValueError, match=r"holds no run of meanfield.simulate .*ensemble result"):
        mf.resume(path)
    with pytest.raises(ValueError, match=r"`checkpoint` .* holds no run of meanfield.simulate \(an energy or ensemble"):
        mf.ensemble(mf.Model(1.0), 4, 0.2, replicas=2, step=0.1, checkpoint=path)
    with pytest.raises(TypeError, match=r"`run_info` is the run record of a Trajectory"):
        mf.save(_hand_built(), path, run_info={"note": "x"})
    with pytest.raises(TypeError, match=r"`complete` marks the checkpoint"):
        mf.save(_hand_built(), path, complete=False)
    with h5py.File(path, "r+") as f:          # the attribute digest covers the ensemble's record too
        f.attrs["confidence"] = 0.5
    with pytest.raises(mf.ResultFileError, match="do not match their checksum"):
        mf.load(path)


def test_a_file_of_an_unregistered_user_scheme_names_the_scheme_not_a_damaged_file(tmp_path):
    """A result of a user's scheme read by a process that has not registered it was reported as "damaged or
    incomplete: ValueError: `scheme` must be one of [...]"; now the message names the scheme and the remedy, and
    the same file reads once the scheme is registered again."""
    import dataclasses

    from meanfield._schemes import SCHEMES

    row = dataclasses.replace(SCHEMES["post-ln"], name="io-user-scheme")
    SCHEMES[row.name] = row
    try:
        traj = mf.simulate(mf.Model(1.0, scheme=row.name), mf.Particles.uniform(8, seed=0), 0.1, backend="particles")
        mf.save(traj, tmp_path / "user.h5")
    finally:
        del SCHEMES[row.name]
    with pytest.raises(mf.ResultFileError, match=r"scheme='io-user-scheme', which is not registered") as err:
        mf.load(tmp_path / "user.h5")
    assert "damaged" not in str(err.value)
    SCHEMES[row.name] = row
    try:
        assert mf.load(tmp_path / "user.h5") == traj
    finally:
        del SCHEMES[row.name]
