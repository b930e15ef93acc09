"""`fusejax tpu run` against a fake gcloud: create through a queued resource, wait, set up at one revision, launch,
get preempted mid-stage, recreate, relaunch with --resume, finish; and the stage's own failure is not retried."""

import re
import subprocess

from fusejax.tpu.cli import main

SLICE = ["--name", "trc-1", "--zone", "us-central2-b", "--type", "v4-16", "--poll", "0.05"]


def _run(tmp_path, repo, rev, *extra):
    return main(["run", *SLICE, "--config", "configs/stage.yaml", "--repo", str(repo), "--revision", rev,
                 "--backoff", "0.01", "--local-dir", str(tmp_path / "local"), *extra, "data.seed=3"])


def _launch_commands(calls):
    return [c for c in calls if c[3] == "ssh" and "run_stage.sh" in c[-1]]


def test_preempted_stage_is_recreated_resumed_and_finishes(fake_gcloud, worker_repo, tmp_path, monkeypatch):
    repo, rev = worker_repo
    monkeypatch.setenv("FAKE_STEPS", "12")
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    fake_gcloud.scenario(workers=2, preempt_at_step=4, unavailable_describes=[3])
    assert _run(tmp_path, repo, rev) == 0

    calls = fake_gcloud.calls()
    creates = [c for c in calls if c[2:4] == ["queued-resources", "create"]]
    deletes = [c for c in calls if c[2:4] == ["queued-resources", "delete"]]
    assert len(creates) == 2 and len(deletes) == 1  # the first slice and the one after the preemption
    assert creates[0] == ["compute", "tpus", "queued-resources", "create", "trc-1", "--node-id=trc-1",
                          "--accelerator-type=v4-16", "--runtime-version=tpu-ubuntu2204-base",
                          "--zone=us-central2-b", "--spot"]
    assert deletes[0][5:] == ["--zone=us-central2-b", "--force", "--quiet"]
    order = [i for i, c in enumerate(calls) if c[2:4] in (["queued-resources", "create"],
                                                          ["queued-resources", "delete"])]
    assert [calls[i][3] for i in order] == ["create", "delete", "create"]
    launch_cmds = _launch_commands(calls)
    assert len(launch_cmds) == 2 and all(c[-2] == "--worker=all" for c in launch_cmds)
    assert "--resume" not in launch_cmds[0][-1] and "data.seed=3 --resume" in launch_cmds[1][-1]

    # What ran on the workers: both workers, both slices; the relaunch continued from the checkpoint.
    launches = fake_gcloud.launches()
    assert sorted((l["worker"], "--resume" in l["args"]) for l in launches) == [(0, False), (0, True), (1, False),
                                                                                 (1, True)]
    resumed = [l for l in launches if "--resume" in l["args"]]
    assert [l["start_step"] for l in resumed if l["worker"] == 0] == [4]  # the checkpoint before the preemption
    assert (fake_gcloud.root / "gs" / "stage" / "checkpoint_step").read_text() == "12"
    # Every worker of the new slice was set up from scratch at the requested revision (not the newer HEAD).
    for l in resumed:
        head = subprocess.run(["git", "-C", l["cwd"], "rev-parse", "HEAD"], capture_output=True, text=True)
        assert head.stdout.strip() == rev

    # Events: timestamped, in order; per-worker logs of the final slice collected.
    events = (tmp_path / "local" / "events.log").read_text().splitlines()
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S", e) for e in events)
    kinds = [e.split()[1] for e in events]
    for a, b in [("create", "setup"), ("setup", "launch"), ("launch", "retry"), ("retry", "delete"),
                 ("delete", "finished")]:
        assert kinds.index(a) < kinds.index(b), (a, b, kinds)
    assert kinds.count("create") == 2 and kinds.count("launch") == 2 and kinds[-1] == "finished"
    assert kinds.count("gcloud-error") == 1  # a transient API error is looked at again, not fatal
    logs = tmp_path / "local" / "logs" / "slice-2"
    assert "finished at step 12" in (logs / "worker-0.log").read_text()
    assert "[step 12/12]" in (logs / "worker-1.log").read_text()


def test_stage_failure_is_not_retried(fake_gcloud, worker_repo, tmp_path, monkeypatch):
    repo, rev = worker_repo
    fake_gcloud.scenario(workers=1)
    ckpt = fake_gcloud.root / "gs" / "stage"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint_step").write_text("4")  # an earlier run's checkpoints and no --resume: train.py refuses
    assert _run(tmp_path, repo, rev) == 2
    calls = fake_gcloud.calls()
    assert len(_launch_commands(calls)) == 1
    assert not [c for c in calls if c[3] == "delete"]
    log = (tmp_path / "local" / "logs" / "slice-1" / "worker-0.log").read_text()
    assert "pass --resume" in log


def test_gives_up_after_bounded_retries(fake_gcloud, worker_repo, tmp_path, monkeypatch):
    repo, rev = worker_repo
    monkeypatch.setenv("FAKE_STEPS", "40")
    fake_gcloud.scenario(workers=1, preempt_at_step=2, preemptions=5)
    assert _run(tmp_path, repo, rev, "--max-retries", "2") == 1
    calls = fake_gcloud.calls()
    assert len([c for c in calls if c[2:4] == ["queued-resources", "create"]]) == 3
    kinds = [e.split()[1] for e in (tmp_path / "local" / "events.log").read_text().splitlines()]
    assert kinds.count("retry") == 2 and kinds[-1] == "give-up"
