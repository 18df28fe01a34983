"""vt-mock against the official VirusTotal Python client, vt-py, unchanged.

Nobody on this project wrote vt-py: if it reads vt-mock's answers the way it reads
VirusTotal's (ids, attributes, error codes through status *and* body, quotas), the mock speaks
VirusTotal v3, and every test and benchmark built on the mock means something.

Run by `make test` (which builds vt-mock and this venv); alone:
    VT_MOCK_BIN=target/debug/vt-mock .venv/bin/python -m pytest tests/conformance
"""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import vt

ROOT = Path(__file__).resolve().parents[2]
MOCK_BIN = os.environ.get("VT_MOCK_BIN", str(ROOT / "target" / "debug" / "vt-mock"))

KEY = "conformance-key"
ONE_A_DAY = "one-a-day-key"
ALICE = "alice-key"
EICAR = {
    "md5": "44d88612fea8a8f36de82e1278abb02f",
    "sha1": "3395856ce81f2b7382dee72602f798b642f14140",
    "sha256": "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
}


@pytest.fixture(scope="module")
def mock():
    proc = subprocess.Popen(
        [
            MOCK_BIN,
            "--port", "0",
            "--key", KEY,
            "--key", f"{ONE_A_DAY}:1/day",
            "--key", f"{ALICE}:public,user=alice,used-day=7",
            "--seed", "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def universe_file(index):
    """Hashes of file `index` of the mock's universe, as `vt-mock hashes` draws them."""
    out = subprocess.run(
        [MOCK_BIN, "hashes", "--count", "1", "--seed", "5", "--mix", "md5", "--list-seed", str(index)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return out[0]


def stats(url):
    with urllib.request.urlopen(f"{url}/_mock/stats") as r:
        return json.load(r)


def test_lookup_by_md5_returns_sha256_id_and_parsed_stats(mock):
    md5 = universe_file(1)
    with vt.Client(KEY, host=mock) as client:
        obj = client.get_object("/files/{}", md5)
    assert obj.type == "file"
    assert len(obj.id) == 64 and obj.id == obj.sha256
    assert obj.md5 == md5
    stats_ = obj.last_analysis_stats
    assert set(stats_) == {
        "malicious", "suspicious", "undetected", "harmless",
        "timeout", "confirmed-timeout", "failure", "type-unsupported",
    }
    assert sum(stats_.values()) == len(obj.last_analysis_results) == 70


def test_eicar_by_sha1_is_the_recorded_answer(mock):
    with vt.Client(KEY, host=mock) as client:
        obj = client.get_object("/files/{}", EICAR["sha1"].upper())
    assert obj.id == EICAR["sha256"]
    assert obj.meaningful_name == "eicar.com-32189"
    assert obj.last_analysis_stats["malicious"] == 66
    assert obj.popular_threat_classification["suggested_threat_label"] == "virus.eicar/test"


def test_vtpy_gets_gzip_because_its_user_agent_says_gzip(mock):
    with vt.Client(KEY, host=mock) as client:
        client.get_object("/files/{}", EICAR["sha256"])
    last = stats(mock)["log"][-1]
    assert last["status"] == 200 and last["gzip"] is True


def test_unknown_hash_raises_not_found(mock):
    with vt.Client(KEY, host=mock) as client:
        with pytest.raises(vt.APIError) as err:
            client.get_object("/files/{}", "0" * 64)
    assert err.value.code == "NotFoundError"


def test_wrong_key_raises_wrong_credentials(mock):
    with vt.Client("not-a-configured-key", host=mock) as client:
        with pytest.raises(vt.APIError) as err:
            client.get_object("/files/{}", EICAR["md5"])
    assert err.value.code == "WrongCredentialsError"


def test_exhausted_quota_raises_quota_exceeded(mock):
    with vt.Client(ONE_A_DAY, host=mock) as client:
        client.get_object("/files/{}", EICAR["md5"])
        with pytest.raises(vt.APIError) as err:
            client.get_object("/files/{}", EICAR["sha1"])
    assert err.value.code == "QuotaExceededError"


def test_users_quotas_read_back(mock):
    with vt.Client(ALICE, host=mock) as client:
        client.get_object("/files/{}", EICAR["md5"])
        user = client.get_object("/users/{}", ALICE)
    assert user.type == "user"
    assert user.id == "alice"
    assert user.quotas["api_requests_daily"] == {"allowed": 500, "used": 8}
    assert user.quotas["api_requests_hourly"] == {"allowed": 240, "used": 1}
    assert user.quotas["api_requests_monthly"]["allowed"] == 15500


def test_urls_domains_and_addresses_read_as_vtpy_objects(mock):
    found, missing = None, None
    with vt.Client(KEY, host=mock) as client:
        for i in range(30):
            url = f"https://login-{i}.evil.com/a?b=c"
            try:
                obj = client.get_object("/urls/{}", vt.url_id(url))
                found = found or (url, obj)
            except vt.APIError as err:
                assert err.code == "NotFoundError"
                missing = missing or url
        domain = client.get_object("/domains/{}", "cdn3.bad-updates.net")
        ip = client.get_object("/ip_addresses/{}", "45.77.12.9")
    assert found and missing, "the mock knows some URLs and not others"
    url, obj = found
    assert obj.type == "url" and obj.id == vt.url_id(url)
    assert obj.url == url and obj.last_final_url.startswith(url.rstrip("/"))
    assert isinstance(obj.last_http_response_code, int) and obj.title
    assert set(obj.last_analysis_stats) >= {"malicious", "harmless", "undetected"}
    assert domain.type == "domain" and domain.id == "cdn3.bad-updates.net"
    assert domain.registrar and isinstance(domain.creation_date, __import__("datetime").datetime)
    assert ip.type == "ip_address" and ip.id == "45.77.12.9"
    assert isinstance(ip.asn, int) and ip.as_owner and ip.network == "45.77.12.0/24"


def test_scan_url_gives_an_analysis_that_completes_and_the_url_is_then_known(mock):
    url = None
    with vt.Client(KEY, host=mock) as client:
        for i in range(50):
            candidate = f"http://fresh-{i}.unknown-host.ru/x"
            try:
                client.get_object("/urls/{}", vt.url_id(candidate))
            except vt.APIError as err:
                assert err.code == "NotFoundError"
                url = candidate
                break
        assert url, "the mock leaves some URLs unknown"
        analysis = client.scan_url(url)
        assert analysis.type == "analysis" and analysis.id.startswith("u-")
        first = client.get_object("/analyses/{}", analysis.id)
        assert first.status in ("queued", "in-progress")
        # The mock's clock moves on past the analysis (30 s, seeded within 15-45 s).
        req = urllib.request.Request(f"{mock}/_mock/clock", data=json.dumps({"advance": "60s"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req).read()
        done = client.get_object("/analyses/{}", analysis.id)
        assert done.status == "completed"
        assert set(done.stats) >= {"malicious", "harmless", "undetected"}
        obj = client.get_object("/urls/{}", vt.url_id(url))
    assert obj.url == url
