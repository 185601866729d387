"""Password hashing, JWTs, API-key secrets and keys for secrets at rest: pure functions, no database."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

ALGORITHM = "HS256"
API_KEY_PREFIX = "aak_"
TokenType = Literal["access", "refresh"]

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def burn_password_check(password: str) -> None:
    """Spend the time a real verification costs, so an unknown user looks like a wrong password."""
    verify_password(_dummy_hash(), password)


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class TokenClaims:
    typ: TokenType
    user_id: uuid.UUID
    family_id: uuid.UUID
    jti: str
    expires_at: datetime


# Tokens whose signature and claims were checked, with what they said: a client sends the same access token on
# every request until it expires, and checking it again costs more than the rest of a small read. Only the expiry
# can change its answer; what the login's rows say is checked each time elsewhere (`auth_cache.py`).
VERIFIED_TOKENS_KEPT = 1024


@dataclass(frozen=True)
class JwtCodec:
    secret: str
    issuer: str
    audience: str
    _verified: dict[tuple[str, str], TokenClaims] = field(default_factory=dict, compare=False, repr=False)

    def encode(
        self, typ: TokenType, user_id: uuid.UUID, family_id: uuid.UUID, ttl_s: int, jti: str | None = None
    ) -> tuple[str, TokenClaims]:
        now = datetime.now(UTC)
        claims = TokenClaims(typ, user_id, family_id, jti or new_jti(), now + timedelta(seconds=ttl_s))
        payload: dict[str, Any] = {
            "typ": typ,
            "sub": str(user_id),
            "fam": str(family_id),
            "jti": claims.jti,
            "iat": int(now.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "iss": self.issuer,
            "aud": self.audience,
        }
        return jwt.encode(payload, self.secret, algorithm=ALGORITHM), claims

    def decode(self, token: str, expected: TokenType) -> TokenClaims:
        claims = self._verified.get((token, expected))
        if claims is None:
            claims = self._verify(token, expected)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[(token, expected)] = claims
        if claims.expires_at <= datetime.now(UTC):
            raise InvalidToken("Signature has expired")
        return claims

    def _verify(self, token: str, expected: TokenType) -> TokenClaims:
        try:
            payload = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "jti", "typ", "iss", "aud"]},
            )
            if payload.get("typ") != expected:
                raise InvalidToken(f"not an {expected} token")
            return TokenClaims(
                typ=expected,
                user_id=uuid.UUID(str(payload["sub"])),
                family_id=uuid.UUID(str(payload["fam"])),
                jti=str(payload["jti"]),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from exc


def new_jti() -> str:
    return secrets.token_urlsafe(24)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def api_key_hash(key: str) -> str:
    # The key carries 256 random bits, so a fast hash is enough and allows lookup by hash.
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_display_prefix(key: str) -> str:
    return key[: len(API_KEY_PREFIX) + 8]


@lru_cache(maxsize=8)
def fernet_for(service_secret: str, purpose: str) -> Fernet:
    """A Fernet key for secrets at rest, derived from the service secret per purpose, so that the JWT signing key
    and the keys of different kinds of stored secret never coincide."""
    from cryptography.fernet import Fernet  # only requests that store or read a secret need it
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"agent-api {purpose} v1".encode())
    return Fernet(base64.urlsafe_b64encode(hkdf.derive(service_secret.encode())))
