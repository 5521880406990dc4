"""Files holding secrets (.env, redis.conf) still get a plan diff: secret values masked on both sides."""

from __future__ import annotations

import subprocess

from psa_provision.services import catalog

ENV = 'NODE_ENV=production\nREDIS_PORT=6379\nREDIS_PASSWORD="s3cr;et"\nJWT_SECRET=abc\nAPP_ADMIN_PASSWORD=x\n'
REDIS = 'bind 127.0.0.1\nrequirepass "p w"\nmaxmemory 2gb\nmasterauth m\n'


def test_the_guests_sed_and_the_tools_mask_agree() -> None:
    """The guest masks with sed, the tool with re: the same text must come out, or every plan differs."""
    for text in (ENV, REDIS):
        sed = subprocess.run(["sed", "-E", catalog.SECRET_LINE_SED], input=text, capture_output=True,
                             text=True, check=True).stdout
        assert sed == catalog.mask_secret_lines(text)
        for value in ("s3cr;et", "abc", "p w", "=x", "auth m"):
            assert value not in sed


def test_plan_shows_a_masked_diff_of_a_secret_file() -> None:
    from psa_provision.changes import unified_diff

    old = catalog.mask_secret_lines(ENV)
    new = catalog.mask_secret_lines(ENV.replace("REDIS_PORT=6379", "REDIS_PORT=6380").replace("abc", "new"))
    diff = unified_diff("/opt/psa-platform/.env", old, new, ["new", "s3cr;et"])
    assert "-REDIS_PORT=6379" in diff and "+REDIS_PORT=6380" in diff
    assert "+JWT_SECRET" not in diff and "-JWT_SECRET" not in diff  # masked alike on both sides
    assert "s3cr;et" not in diff and "new" not in diff.replace("+++", "").replace("---", "")
