"""The hazmat layer: small, separately tested cryptographic functions.

kdf · key agreement (X25519) · signatures (Ed25519) · AEAD (ChaCha20-Poly1305)
· PRG (AES-256 counter mode, via OpenSSL's CTR or GCM code) · Shamir sharing · Paillier (the only module importing phe).
"""
