"""The optional judge: reply parsing, a fake OpenAI-compatible server, and a refused connection
that leaves a clear message and every other sweep score intact."""

from __future__ import annotations

import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from steering_core import random_unit_vector
from steering_core.measure.judge import JudgeConfig, JudgeError, judge_rollouts, parse_score
from steering_core.measure.sweep import SweepSpec, run_sweep


def test_parse_score_accepts_json_and_code_fences_only_in_range():
    assert parse_score('{"score": 7}') == 7
    assert parse_score('```json\n{"score": 10}\n```') == 10
    for bad in ('{"score": 0}', '{"score": 11}', "seven", '{"grade": 5}', '{"score": true}'):
        with pytest.raises(JudgeError, match="score from 1 to 10"):
            parse_score(bad)


class _Fake(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        system = body["messages"][0]["content"]
        score = 10 if "wedding" in system else 4
        out = json.dumps({"choices": [{"message": {"content": json.dumps({"score": score})}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def test_judge_scores_map_1_to_10_onto_0_to_1():
    srv = HTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = JudgeConfig(f"http://127.0.0.1:{srv.server_port}/v1", "fake")
        beh, coh = judge_rollouts(cfg, "The text contains discussion about a wedding", ["p"], ["c"])
        assert beh == [1.0] and coh == [pytest.approx(3 / 9)]
    finally:
        srv.shutdown()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_refused_judge_leaves_a_message_and_the_other_scores(tiny_hf, one_thread):
    cfg = JudgeConfig(f"http://127.0.0.1:{_closed_port()}/v1", "fake", timeout_s=2)
    with pytest.raises(JudgeError, match="cannot be reached"):
        judge_rollouts(cfg, "weddings", ["p"], ["c"])
    spec = SweepSpec(prompts=("hello",), alphas=(2.0,), samples=2, new_tokens=4, chat=False, keywords=("the",),
                     judge_criterion="The text contains discussion about a wedding")
    pts = run_sweep(tiny_hf, random_unit_vector(tiny_hf.d_model, 0), 1, spec, judge=cfg, with_dce=False)
    for p in pts:
        assert p.notes and "cannot be reached" in p.notes[0] and "other scores are kept" in p.notes[0]
        assert "judge" not in p.scores
        assert not math.isnan(p.get("keywords")) and not math.isnan(p.get("coherence"))


def test_bad_judge_settings():
    with pytest.raises(JudgeError, match="http"):
        JudgeConfig("ftp://x", "m").check()
    with pytest.raises(JudgeError, match="criterion is empty"):
        judge_rollouts(JudgeConfig("http://127.0.0.1:1/v1", "m"), "  ", ["p"], ["c"])
