"""The provider's ``Content-Disposition`` (issue 13, slice 3): what squid-py 0.9.3 saves a served file
under, for ordinary and hostile names; and how the url= form's file URL is recovered from a query
squid-py left unencoded. Unit tests, no devnet (the served forms: tests/integration/test_provider_brizo_forms.py)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from ocean_secret_store.ocean.provider.app import _content_disposition, _parse_consume, attachment_name

#: squid-py 0.9.3's pattern (``squid_py/brizo/brizo.py``, ``Brizo._get_file_name``):
#: ``re.match(r'attachment;filename=(.+)', response.headers.get('content-disposition'))[1]``.
SQUID_FILE_NAME = r"attachment;filename=(.+)"
SAFE = re.compile(r"[A-Za-z0-9._+~-]{1,128}")


def squid_saves(header: str) -> str:
    match = re.match(SQUID_FILE_NAME, header)
    assert match is not None, header
    return match[1]


def check_safe(name: str) -> None:
    assert SAFE.fullmatch(name), name
    assert not name.startswith(".") and not name.endswith("."), name
    assert os.path.dirname(os.path.join("/downloads/asset", name)) == "/downloads/asset"


@pytest.mark.parametrize(("name", "path", "saved"), [
    ("data.bin", "/files/x", "data.bin"),
    (None, "/files/data%20set.csv", "data_set.csv"),  # the URL's last segment, percent-decoded
    ("", "/files/report.pdf", "report.pdf"),
    (None, "/", "file-3"),  # squid-py's own fallback name
    ("../../etc/passwd", "/x", "passwd"),
    ("..\\..\\windows\\win.ini", "/x", "win.ini"),
    ("dir/", "/x", "dir"),
    ("..", "/files/real.bin", "real.bin"),
    (".", "", "file-3"),
    ("///", "", "file-3"),
    (".bashrc", "/x", "bashrc"),
    ('"data.bin"', "/x", "_data.bin_"),
    ("a;filename=evil.sh", "/x", "a_filename_evil.sh"),
    ("x\r\nSet-Cookie: session=1", "/x", "x__Set-Cookie__session_1"),
    ("nul\x00byte.bin", "/x", "nul_byte.bin"),
    ("tab\tand\x7fdel", "/x", "tab_and_del"),
    ("line\u2028sep", "/x", "line_sep"),
    ("données.csv", "/x", "donn_es.csv"),
    ("a b,c'd`e|f*g?h<i>j", "/x", "a_b_c_d_e_f_g_h_i_j"),
    ("%2e%2e%2fetc", "/x", "_2e_2e_2fetc"),  # a name is not percent-decoded: its % is not safe
    ('"', "/files/fallback.bin", "fallback.bin"),  # nothing but unsafe characters
    ("CON", "/x", "_CON"),
    ("nul.txt", "/x", "_nul.txt"),
    ("trailing...", "/x", "trailing"),
    (7, "/files/seven.bin", "seven.bin"),  # a name that is not a string is ignored
])
def test_the_saved_name(name: object, path: str, saved: str) -> None:
    header = _content_disposition({"name": name, "index": 3}, path, 3)
    assert header == f"attachment;filename={saved}"
    assert squid_saves(header) == saved  # not '"data.bin"' with its quotes, as before
    check_safe(saved)


def test_a_long_name_keeps_its_extension() -> None:
    name = attachment_name({"name": "x" * 300 + ".csv"}, "/", 0)
    assert len(name) == 128 and name.endswith(".csv")
    check_safe(name)
    assert len(attachment_name({"name": "y" * 300}, "/", 0)) == 128


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.none(), st.text()), path=st.text(), index=st.integers(0, 10**6))
def test_any_name_is_one_safe_token(name: str | None, path: str, index: int) -> None:
    header = _content_disposition({"name": name}, path, index)
    saved = squid_saves(header)
    assert header == "attachment;filename=" + saved
    check_safe(saved)


# -- the url= form's URL as squid-py sends it ------------------------------------------------

AGREEMENT = "0x" + "ab" * 32
CONSUMER = "0x" + "cd" * 20


def parse_raw(raw_query: str) -> tuple[str, ...]:
    """Parse a raw query the way aiohttp hands it to the provider."""
    from yarl import URL

    url = URL("http://provider/api/v1/brizo/services/consume?" + raw_query, encoded=True)
    return _parse_consume(url.query, url.raw_query_string).urls


def test_an_unencoded_url_with_its_own_query_is_recovered() -> None:
    file_url = "https://bucket.example/data.csv?X-Amz-Credential=a%2Fb&X-Amz-Signature=c+d"
    urls = parse_raw(f"url={file_url}&serviceAgreementId={AGREEMENT}&consumerAddress={CONSUMER}")
    assert file_url in urls
    assert "https://bucket.example/data.csv?X-Amz-Credential=a/b" in urls  # what the query parses to


def test_an_encoded_url_parses_as_itself() -> None:
    from urllib.parse import urlencode

    file_url = "http://host/a b?x=1&y=2"
    urls = parse_raw(urlencode({"url": file_url, "serviceAgreementId": AGREEMENT, "consumerAddress": CONSUMER}))
    assert urls[0] == file_url


def test_the_index_form_has_no_urls() -> None:
    query = MultiDict({"serviceAgreementId": AGREEMENT, "consumerAddress": CONSUMER, "signature": "0x" + "11" * 65,
                       "index": "0"})
    parsed = _parse_consume(query, "")
    assert parsed.urls == () and parsed.index == 0
