import logging
import pickle

import pytest

from broker.secret import Secret


def test_secret_hides_itself(caplog):
    s = Secret("tok-123-very-secret")
    assert "tok-123" not in repr(s)
    assert "tok-123" not in str(s)
    assert "tok-123" not in f"{s} {s!r} {s:>30}"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").warning("token %s %r", s, s)
    assert "tok-123" not in caplog.text
    assert s.reveal() == "tok-123-very-secret"
    assert s == Secret("tok-123-very-secret") and s != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(s)
