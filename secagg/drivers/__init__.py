"""Round drivers: one I/O-free driver per role, shared by every transport and
both protocol families (docs/architecture.md).

* :class:`ServerDriver` runs a round of any protocol core: start, receive,
  gone, close_stage, result.
* :class:`ClientDriver` answers a server's messages through a
  :class:`StateStore` (the once-per-(session, stage) claim) with a role:
  :class:`MaskingClientRole`, :class:`PaillierClientRole`, :class:`KeyHolderRole`,
  :class:`CommitteeClientRole` (a Paillier client that holds a share of the
  decryption committee's key).
* :class:`Observer` receives timings, byte counts, transcripts and
  rejections; :class:`Recorder` keeps them.
"""

from .client import ClientDriver, ClientRole, Contribution, Step
from .committee import CommitteeClientRole
from .masking import MaskingClientRole, MaskingRecord
from .observer import Observer, Observers, Recorder
from .paillier import KeyHolderRole, PaillierClientRole
from .server import ServerCore, ServerDriver
from .store import DirectoryStore, MemoryStore, StageAlreadyAnswered, StateStore

__all__ = ["ClientDriver", "ClientRole", "CommitteeClientRole", "Contribution", "DirectoryStore", "KeyHolderRole", "MaskingClientRole",
           "MaskingRecord", "MemoryStore", "Observer", "Observers", "PaillierClientRole", "Recorder", "ServerCore",
           "ServerDriver", "StageAlreadyAnswered", "StateStore", "Step"]
