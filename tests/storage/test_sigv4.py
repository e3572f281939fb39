"""SigV4 against AWS's published examples (moto accepts any signature, so these are the proof),
and the defensive parsing of S3 responses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from moorage.storage.base import StorageError
from moorage.storage.s3 import MAX_XML, _parse_xml
from moorage.storage.sigv4 import EMPTY_SHA256, Credentials, Signer

# https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html (examples) and
# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
AWS_EXAMPLE = Signer(
    Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "us-east-1"
)
WHEN = datetime(2013, 5, 24, tzinfo=UTC)
HOST = "examplebucket.s3.amazonaws.com"


def test_header_signature_matches_aws_example_list_objects() -> None:
    out = AWS_EXAMPLE.sign_headers(
        "GET", HOST, "/", {"max-keys": "2", "prefix": "J"}, {}, EMPTY_SHA256, now=WHEN
    )
    assert out["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )
    assert out["x-amz-date"] == "20130524T000000Z"


def test_header_signature_matches_aws_example_get_lifecycle() -> None:
    out = AWS_EXAMPLE.sign_headers("GET", HOST, "/", {"lifecycle": ""}, {}, EMPTY_SHA256, now=WHEN)
    assert out["Authorization"].endswith(
        "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    )


def test_presigned_url_matches_aws_example() -> None:
    q = AWS_EXAMPLE.presign_query("GET", HOST, "/test.txt", 86400, now=WHEN)
    assert q["X-Amz-Signature"] == (
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    assert q["X-Amz-Credential"] == "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"


def test_secret_is_not_in_repr() -> None:
    assert "EXAMPLEKEY" not in repr(AWS_EXAMPLE.credentials)


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
        b"<x><unclosed></x>",
        b"<x>" + b"a" * MAX_XML + b"</x>",
    ],
)
def test_hostile_s3_responses_are_refused(body: bytes) -> None:
    with pytest.raises(StorageError):
        _parse_xml(body)


def test_namespaces_are_stripped() -> None:
    root = _parse_xml(
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<IsTruncated>false</IsTruncated></ListBucketResult>"
    )
    assert root.tag == "ListBucketResult" and root.findtext("IsTruncated") == "false"
