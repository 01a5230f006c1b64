"""Who is calling: the caller's identity from the request, per ``AUTH_MODE``.

- ``key``: the function key (checked by the platform) is all there is; every caller shares one
  owner, and limits apply per client address.
- ``entra``: a Microsoft Entra ID bearer token, validated here (:mod:`.entra`).
- ``easyauth``: App Service Authentication validated the caller and set its principal headers
  (:mod:`.easyauth`).
"""

from .caller import Caller, CredentialsUnavailable, Unauthenticated
from .identify import identify

__all__ = ["Caller", "CredentialsUnavailable", "Unauthenticated", "identify"]
