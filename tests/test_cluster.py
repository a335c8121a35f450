"""The cluster machinery against a real Prefect server.

* The run-key lock: created on demand, active with one slot; a disabled limit is refused rather
  than let through; two processes that want the same key take turns (and, as the positive
  control, two different keys do not wait for each other).
* The fan-out's wait: a completed child passes, a failed one is named with its flow run and state
  message, a crashed one is reported once its attempts are spent — after every child is final.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .servers import _free_port, _start, _stop, _wait

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]

HOLD = textwrap.dedent("""
    import json, sys, time
    from flows.locks import global_lock
    with global_lock(sys.argv[1]):
        start = time.time()
        time.sleep(6)
        print(json.dumps([start, time.time()]))
""")


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.slow
def test_run_key_lock_and_fan_out_wait_against_a_real_prefect_server(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PYTHONPATH=str(ROOT))
    server = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                    tmp_path / "prefect.log")
    try:
        _wait(api + "/health", server)
        # this process reaches the server through temporary_settings only: an environment variable
        # would be captured by Prefect's global settings on first import and outlive this test
        from prefect import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
        from prefect.settings import temporary_settings, PREFECT_API_URL

        from flows import locks

        with temporary_settings({PREFECT_API_URL: api}):
            assert locks.prefect_server_configured()
            locks.ensure_limit(locks.limit_name("abc"))
            with get_client(sync_client=True) as client:
                limit = client.read_global_concurrency_limit_by_name(locks.limit_name("abc"))
                assert limit.active and limit.limit == 1
                client.update_global_concurrency_limit(locks.limit_name("abc"),
                                                       GlobalConcurrencyLimitUpdate(active=False))
            with pytest.raises(locks.LockError, match="inactive.*prefect gcl update"):
                with locks.global_lock("abc"):
                    pass

        def race(keys: list[str]) -> list[list[float]]:
            procs = [subprocess.Popen([sys.executable, "-c", HOLD, k], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for k in keys]
            outs = [p.communicate(timeout=300) for p in procs]
            assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
            return [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]

        with temporary_settings({PREFECT_API_URL: api}):
            check_wait()

        same = race(["k1", "k1"])
        assert not _overlap(*same), same  # one waited for the other
        different = race(["k2", "k3"])
        assert _overlap(*different), different  # the control: unrelated keys run together

        # the server restarts while a flow run asks for a lock: it waits the restart out and takes it
        _stop(server)
        asked = subprocess.Popen([sys.executable, "-c", HOLD, "k4"], env=dict(env, NAI3_PREFECT_PATIENCE_S="240"),
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        assert asked.poll() is None, asked.communicate()  # still waiting for the server, not failed
        server = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                        tmp_path / "prefect-restarted.log")
        _wait(api + "/health", server)
        out, err = asked.communicate(timeout=300)
        assert asked.returncode == 0, err[-3000:]
        assert "does not answer while checking the lock nai3-lock-k4" in err and "answers again" in err, err[-3000:]
        start, end = json.loads(out.strip().splitlines()[-1])
        assert end - start >= 6  # it held the lock for its whole body
    finally:
        _stop(server)


def check_wait() -> None:
    from prefect import flow, get_client
    from prefect.states import Completed, Crashed, Failed, Running

    from flows import fanout

    @flow(name="nai3-test-child")
    def child() -> None:
        pass

    made = {}
    with get_client(sync_client=True) as client:
        for label, state in (("ok", Completed()), ("bad", Failed(message="loss went NaN at step 3")),
                             ("dead", Crashed(message="no heartbeat")), ("late", Running())):
            made[label] = client.create_flow_run(child, name=f"child-{label}", state=state)
    children = [fanout.Child(fanout.Unit(label, 0), {}, [str(fr.id)], name=fr.name) for label, fr in made.items()]

    def finish_late(msg: str) -> None:
        if "running" in msg:  # the first poll saw 'late' still running: it completes now
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(made["late"].id, Completed(), force=True)

    with pytest.raises(fanout.FanOutFailed) as err:
        fanout.wait(children, attempts=1, poll_s=0.2, echo=finish_late)
    text = str(err.value)
    assert "2 of 4" in text and "child-bad" in text and "loss went NaN at step 3" in text
    assert "dead@seed0" in text and "CRASHED" in text and "ok@seed0" not in text and "late@seed0" not in text
    assert [c.state for c in children] == ["COMPLETED", "FAILED", "CRASHED", "COMPLETED"]
