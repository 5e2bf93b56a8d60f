"""The stages of a round, one vocabulary for every protocol family.

Masking stages follow Bonawitz et al. (CCS'17), Fig. 4: Round 0
AdvertiseKeys, Round 1 ShareKeys, Round 2 MaskedInputCollection, Round 3
ConsistencyCheck (malicious-server mode only), Round 4 Unmasking
(protocols/masking/SPEC.md §3). Paillier rounds have two: Submit (clients
send encrypted, packed updates) and Decrypt (the aggregate goes to the key
holder, only the decrypted sums come back; protocols/paillier/SPEC.md §3),
and with a decryption committee a third when needed: Decrypt recovery (the
ciphertexts that lacked ``t`` valid shares, asked of the members that
answered correctly; SPEC.md §8).

The values are stable strings: they appear in audit logs, dropout schedules,
reports and the transcripts of the test vectors.
"""

from __future__ import annotations

import enum

__all__ = ["Stage", "MASKING_STAGES", "PAILLIER_STAGES"]


class Stage(str, enum.Enum):
    """A stage of a round (the paper's round names), or its end state."""

    ADVERTISE_KEYS = "advertise_keys"  # masking, Round 0: AdvertiseKeys
    SHARE_KEYS = "share_keys"  # masking, Round 1: ShareKeys
    MASKED_INPUT = "masked_input"  # masking, Round 2: MaskedInputCollection
    CONSISTENCY_CHECK = "consistency_check"  # masking, Round 3: ConsistencyCheck
    UNMASKING = "unmasking"  # masking, Round 4: Unmasking
    SUBMIT = "submit"  # Paillier: encrypted submissions
    DECRYPT = "decrypt"  # Paillier: the aggregate to the key holder, or to the decryption committee
    DECRYPT_RECOVERY = "decrypt_recovery"  # Paillier committee: ciphertexts that lacked t valid shares
    DONE = "done"
    ABORTED = "aborted"

    @property
    def final(self) -> bool:
        return self in (Stage.DONE, Stage.ABORTED)


#: The stages a masking client can answer (and so vanish at), in order.
MASKING_STAGES = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK,
                  Stage.UNMASKING)
#: The stages of a Paillier round, in order (with a key holder, clients
#: answer only Submit; committee members also answer the decryption stages).
PAILLIER_STAGES = (Stage.SUBMIT, Stage.DECRYPT, Stage.DECRYPT_RECOVERY)
