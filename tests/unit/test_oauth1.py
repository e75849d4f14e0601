"""OAuth 1.0a signing against the well-known worked example of RFC 5849 signing (Twitter's
"Creating a signature" guide: HMAC-SHA1, with a token), and the HMAC-SHA256 header OneRoster uses."""

from rostersync.adapters.oauth1 import (
    authorization_header,
    base_string_uri,
    percent_encode,
    signature,
    signature_base_string,
)

PARAMS = [
    ("status", "Hello Ladies + Gentlemen, a signed OAuth request!"),
    ("include_entities", "true"),
    ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
    ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
    ("oauth_signature_method", "HMAC-SHA1"),
    ("oauth_timestamp", "1318622958"),
    ("oauth_token", "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
    ("oauth_version", "1.0"),
]


def test_the_worked_example_signs_as_published():
    base = signature_base_string("post", "https://api.twitter.com/1.1/statuses/update.json", PARAMS)
    assert base.startswith("POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue")
    assert "status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521" in base
    assert (
        signature(
            base,
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
            digest="sha1",
        )
        == "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
    )


def test_uri_normalisation_and_encoding():
    assert base_string_uri("HTTP://Example.COM:80/r%20v/X?id=123") == "http://example.com/r%20v/X"
    assert base_string_uri("https://127.0.0.1:8443/ims") == "https://127.0.0.1:8443/ims"
    assert percent_encode("a b+c~d/é") == "a%20b%2Bc~d%2F%C3%A9"


def test_the_header_carries_every_oauth_parameter_and_changes_with_the_query():
    one = authorization_header("GET", "http://h/x", {"limit": 5}, "key", "secret", nonce="n", timestamp=1)
    two = authorization_header("GET", "http://h/x", {"limit": 6}, "key", "secret", nonce="n", timestamp=1)
    assert one.startswith("OAuth ") and 'oauth_signature_method="HMAC-SHA256"' in one
    for name in ("oauth_consumer_key", "oauth_nonce", "oauth_timestamp", "oauth_version", "oauth_signature"):
        assert f"{name}=" in one
    assert one != two
