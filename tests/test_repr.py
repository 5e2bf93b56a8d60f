"""Objects that hold secrets print without them.

A ``repr`` ends up in logs, tracebacks, debugger sessions and error reports.
For every object that holds key material, seeds, shares or a private update,
no secret may appear in its ``repr()`` or ``str()``: neither whole nor any
8-byte piece of it, in hex or as a bytes literal; for integers (Paillier
primes, obfuscators) no 12-digit piece in decimal or hex; for arrays (shares,
updates) none of their values.
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg.drivers import KeyHolderRole, MaskingClientRole, MaskingRecord, MemoryStore, PaillierClientRole
from secagg.drivers.client import Contribution
from secagg.encoding.fixed_point import FixedPoint
from secagg.primitives import paillier as pl
from secagg.primitives.key_agreement import generate_keypair
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.signatures import generate_signing_keypair
from secagg.protocols.masking import MaskingClient, MaskingParams, MaskingServer
from secagg.protocols.paillier import PaillierClient, PaillierKeyHolder

UPDATE = np.array([0.7316428571, -0.2718281828, 0.1414213562, 0.5772156649, -0.6931471805])


def _pieces(secret: object) -> list[str]:
    """What must not appear for ``secret``."""
    if isinstance(secret, (bytes, bytearray)):
        s = bytes(secret)
        out = [s.hex(), repr(s)]
        for i in range(max(1, len(s) - 7)):
            window = s[i:i + 8]
            if len(window) == 8 and any(window):  # an all-zero slot is not a secret
                out += [window.hex(), repr(window)[2:-1]]
        return out
    if isinstance(secret, (int, np.integer)) and not isinstance(secret, bool):
        dec, hx = str(int(secret)), format(int(secret), "x")
        return [text[i:i + 12] for text in (dec, hx) for i in range(0, max(1, len(text) - 11))]
    if isinstance(secret, np.ndarray):
        out = []
        for v in secret.ravel().tolist()[:64]:
            text = repr(float(v)) if isinstance(v, float) else str(v)
            if len(text.lstrip("-0.")) >= 6:  # short numbers appear anywhere by chance
                out.append(text.lstrip("-"))
        return out
    if isinstance(secret, str):
        return [secret]
    raise TypeError(type(secret))


def assert_hidden(obj: object, *secrets: object) -> None:
    for text in (repr(obj), str(obj)):
        for secret in secrets:
            for piece in _pieces(secret):
                assert piece not in text, f"{type(obj).__name__} shows a secret ({piece!r}) in {text!r}"


def test_the_check_finds_a_leak():
    class Leaky:
        def __init__(self, key: bytes) -> None:
            self.key = key

        def __repr__(self) -> str:
            return f"Leaky({self.key.hex()[:16]})"

    with pytest.raises(AssertionError):
        assert_hidden(Leaky(bytes(range(1, 33))), bytes(range(1, 33)))
    with pytest.raises(AssertionError):
        assert_hidden(np.array([123456789, 987654321]), np.array([987654321]))


@pytest.fixture(scope="module")
def masking_round():
    """Four clients of a SecAgg round through the masked input: their states
    hold private keys, the self-mask seed, pairwise keys and seeds, shares."""
    params = MaskingParams.create([1, 2, 3, 4], UPDATE.size, protocol="secagg",
                                  rng=DeterministicRandom("repr/params"))
    server = MaskingServer(params, DeterministicRandom("repr/server"))
    clients = {u: MaskingClient(params, u, DeterministicRandom(f"repr/client/{u}")) for u in params.client_ids}
    server.start()
    for u, c in clients.items():
        server.receive(u, c.advertise_keys())
    out = server.close_round()
    for u, c in clients.items():
        server.receive(u, c.share_keys(out[u]))
    out = server.close_round()
    for u, c in clients.items():
        c.masked_input(out[u], UPDATE * u, 1.0)
    return params, clients


def _state_secrets(state) -> list[object]:
    return [state.enc_private, state.mask_private, state.self_mask_seed, state.enc_keys, state.mask_seeds,
            state.held_self_mask, state.held_mask_key]


def test_masking_client_state_and_client(masking_round):
    params, clients = masking_round
    for c in clients.values():
        st = c.state
        assert st.stage == "masked" and st.held_self_mask.size and len(st.mask_seeds) == 32 * 4
        assert_hidden(st, *_state_secrets(st))
        assert_hidden(c, *_state_secrets(st))
    assert "client 1" in repr(clients[1].state) and "masked" in repr(clients[1].state)


def test_masking_record_and_the_store_that_holds_it(masking_round):
    params, clients = masking_round
    state = clients[2].state
    record = MaskingRecord(params, state, UPDATE * 2, 2.0)
    assert_hidden(record, *_state_secrets(state), UPDATE * 2)
    store = MemoryStore()
    store.save(params.session_id, record)
    assert_hidden(store, *_state_secrets(state), UPDATE * 2)


def test_masking_role_with_a_signing_key():
    signing = generate_signing_keypair(DeterministicRandom("repr/role-signing"))
    role = MaskingClientRole(7, rng=DeterministicRandom("repr/role"), signing_key=signing.private,
                             trusted_signing_keys={7: signing.public})
    assert_hidden(role, signing.private)


def test_key_pairs():
    pair = generate_keypair(DeterministicRandom("repr/x25519"))
    assert_hidden(pair, pair.private)
    signing = generate_signing_keypair(DeterministicRandom("repr/ed25519"))
    assert_hidden(signing, signing.private)


def test_deterministic_random_hides_its_seed():
    seed = bytes(range(100, 132))
    rng = DeterministicRandom(seed)
    assert_hidden(rng, seed)
    assert_hidden(DeterministicRandom("a very secret seed"), "a very secret seed", b"a very secret seed")
    assert_hidden(rng.fork("child"), seed)


def test_private_update_containers():
    assert_hidden(Contribution(UPDATE, 3.5), UPDATE)
    quantized = FixedPoint(clip=1.0, frac_bits=20).quantize(UPDATE, 1.0, DeterministicRandom("repr/q"))
    assert_hidden(quantized, quantized.values, UPDATE)


@pytest.fixture(scope="module")
def paillier_key():
    return pl.generate_keypair(512, DeterministicRandom("repr/paillier"))


def _prime_secrets(sk: pl.PrivateKey) -> list[int]:
    k = sk.to_phe()
    return [int(k.p), int(k.q), int(k.hp), int(k.hq)]


def test_paillier_private_key_and_key_holder(paillier_key):
    pk, sk = paillier_key
    assert_hidden(sk, *_prime_secrets(sk))
    holder = PaillierKeyHolder(private_key=sk, threads=1)
    assert_hidden(holder, *_prime_secrets(sk))
    assert_hidden(KeyHolderRole(holder), *_prime_secrets(sk))


def test_paillier_obfuscators_are_hidden(paillier_key):
    """An obfuscator reveals the plaintext of the ciphertext it made."""
    pk, _ = paillier_key
    values = [int(v) for v in pl.precompute_obfuscators(pk, 3, DeterministicRandom("repr/rho"))]
    pool = pl.ObfuscatorPool(pk, values)
    assert_hidden(pool, *values)
    client = PaillierClient(1, pk, rng=DeterministicRandom("repr/pc"), min_key_bits=512, pool=pool)
    assert_hidden(client, *values)
    role = PaillierClientRole(2, pk, rng=DeterministicRandom("repr/role"), min_key_bits=512)
    role.pool.extend(values)
    assert_hidden(role, *values)
