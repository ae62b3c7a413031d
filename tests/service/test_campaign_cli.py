"""``botkit campaign``: the commands against a real Redis, as an operator types them.

No service runs here, so nothing is sent: these check the commands' own
answers (states, errors, exit codes).
"""

from __future__ import annotations

from pathlib import Path

from tests.service._harness import clean_env, run_cli

TARGET = "tests.service.campaignbot:bot"


def env(redis_url: str, prefix: str) -> dict[str, str]:
    return clean_env(BOTKIT_REDIS_URL=redis_url, BOTKIT_KEY_PREFIX=prefix)


def audience(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text("phone,first_name\n+7 903 000-00-01,Anna\n79030000002,Boris\nnope,x\n")
    return path


def test_start_status_pause_resume_cancel_as_an_operator_types_them(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    e = env(redis_url, redis_prefix)
    started = run_cli(
        [
            "campaign", "start", TARGET, "--name", "spring", "--template", "sale",
            "--audience", str(audience(tmp_path)), "--param-columns", "first_name",
            "--at", "2099-01-01T09:00:00+00:00",
        ],
        e,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "campaign spring started" in started.stdout
    assert "campaign spring: scheduled, template sale, rate 20/s" in started.stdout
    assert "skipped by reason: invalid 1" in started.stdout
    status = run_cli(["campaign", "status", "spring"], e)
    assert status.returncode == 0
    assert "[..............................]   0%  0 of 2" in status.stdout
    assert run_cli(["campaign", "pause", "spring"], e).stdout == "campaign spring: paused\n"
    again = run_cli(["campaign", "pause", "spring"], e)
    assert again.returncode == 2
    assert "campaign 'spring' is paused: it cannot pause" in again.stderr
    assert run_cli(["campaign", "resume", "spring"], e).stdout == "campaign spring: scheduled\n"
    assert run_cli(["campaign", "cancel", "spring"], e).stdout == "campaign spring: cancelled\n"
    assert run_cli(["campaign", "status", "spring", "--watch"], e).returncode == 0  # ended
    report = tmp_path / "report.csv"
    written = run_cli(["campaign", "report", "spring", "--csv", str(report)], e)
    assert written.returncode == 0, written.stderr
    lines = report.read_text().splitlines()
    assert lines[0] == "phone,result,message_id,status,error_code"
    # Cancelled before its time: the two valid recipients stay queued (never sent).
    assert sorted(lines[1:]) == [
        "79030000001,queued,,,",
        "79030000002,queued,,,",
        "nope,skipped:invalid,,,",
    ]
    taken = run_cli(
        ["campaign", "start", TARGET, "--name", "spring", "--template", "sale",
         "--audience", str(audience(tmp_path))],
        e,
    )  # fmt: skip
    assert taken.returncode == 2
    assert "exists already; pick another name" in taken.stderr


def test_mistakes_are_one_line_with_an_exit_code(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    e = env(redis_url, redis_prefix)
    unknown = run_cli(["campaign", "status", "nobody"], e)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        4,
        f"botkit campaign status: no campaign is called 'nobody' (under {redis_prefix!r})",
    )
    missing = run_cli(
        ["campaign", "start", TARGET, "--name", "x", "--template", "t",
         "--audience", str(audience(tmp_path)), "--param-columns", "code"],
        e,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "has no column 'code'; its columns are 'phone', 'first_name'" in missing.stderr
    no_file = run_cli(
        ["campaign", "start", TARGET, "--name", "x", "--template", "t",
         "--audience", str(tmp_path / "absent.csv")],
        e,
    )  # fmt: skip
    assert no_file.returncode == 2 and "cannot read the audience" in no_file.stderr
    bad_time = run_cli(
        ["campaign", "start", TARGET, "--name", "x", "--template", "t",
         "--audience", str(audience(tmp_path)), "--at", "tomorrow"],
        e,
    )  # fmt: skip
    assert bad_time.returncode == 2 and "is not an ISO time" in bad_time.stderr
    without_redis = run_cli(["campaign", "status", "x"], clean_env())
    assert without_redis.returncode == 2
    assert "BOTKIT_REDIS_URL: required" in without_redis.stderr
    assert "Traceback" not in without_redis.stderr + missing.stderr + unknown.stderr
