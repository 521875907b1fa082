"""RFC 6030 samples: the RFC's own figures 6 and 7, and containers built here with
`cryptography` following §§ 6.1-6.2 (AES-CBC with the IV first, HMAC over IV and
ciphertext, PBKDF2 for passwords)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# RFC 6030 figure 6 (§6.1): pre-shared AES-128 key, MAC key encrypted with it.
FIGURE6_KEY = bytes.fromhex("12345678901234567890123456789012")
FIGURE6 = b"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
  <EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>
  <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData><xenc:CipherValue>
ESIzRFVmd4iZABEiM0RVZgKn6WjLaTC1sbeBMSvIhRejN9vJa2BOlSaMrR7I5wSX
      </xenc:CipherValue></xenc:CipherData>
    </MACKey>
  </MACMethod>
  <KeyPackage>
    <DeviceInfo><Manufacturer>Manufacturer</Manufacturer><SerialNo>987654321</SerialNo></DeviceInfo>
    <CryptoModuleInfo><Id>CM_ID_001</Id></CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters><ResponseFormat Length="8" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret>
          <EncryptedValue>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData><xenc:CipherValue>
AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv
            </xenc:CipherValue></xenc:CipherData>
          </EncryptedValue>
          <ValueMAC>Su+NvtQfmvfJzF6bmQiJqoLRExc=</ValueMAC>
        </Secret>
        <Counter><PlainValue>0</PlainValue></Counter>
      </Data>
    </Key>
  </KeyPackage>
</KeyContainer>
"""

# RFC 6030 figure 7 (§6.2): PBKDF2 from the password "qwerty".
FIGURE7_PASSWORD = "qwerty"
FIGURE7 = b"""<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer
  xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
  xmlns:xenc11="http://www.w3.org/2009/xmlenc11#"
  xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"
  xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Version="1.0">
  <pskc:EncryptionKey>
    <xenc11:DerivedKey>
      <xenc11:KeyDerivationMethod
        Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">
        <pkcs5:PBKDF2-params>
          <Salt><Specified>Ej7/PEpyEpw=</Specified></Salt>
          <IterationCount>1000</IterationCount>
          <KeyLength>16</KeyLength>
          <PRF/>
        </pkcs5:PBKDF2-params>
      </xenc11:KeyDerivationMethod>
      <xenc:ReferenceList><xenc:DataReference URI="#ED"/></xenc:ReferenceList>
      <xenc11:MasterKeyName>My Password 1</xenc11:MasterKeyName>
    </xenc11:DerivedKey>
  </pskc:EncryptionKey>
  <pskc:MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <pskc:MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData><xenc:CipherValue>
2GTTnLwM3I4e5IO5FkufoOEiOhNj91fhKRQBtBJYluUDsPOLTfUvoU2dStyOwYZx
      </xenc:CipherValue></xenc:CipherData>
    </pskc:MACKey>
  </pskc:MACMethod>
  <pskc:KeyPackage>
    <pskc:DeviceInfo>
      <pskc:Manufacturer>TokenVendorAcme</pskc:Manufacturer>
      <pskc:SerialNo>987654321</pskc:SerialNo>
    </pskc:DeviceInfo>
    <pskc:CryptoModuleInfo><pskc:Id>CM_ID_001</pskc:Id></pskc:CryptoModuleInfo>
    <pskc:Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp" Id="123456">
      <pskc:Issuer>Example-Issuer</pskc:Issuer>
      <pskc:AlgorithmParameters>
        <pskc:ResponseFormat Length="8" Encoding="DECIMAL"/>
      </pskc:AlgorithmParameters>
      <pskc:Data>
        <pskc:Secret>
          <pskc:EncryptedValue Id="ED">
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData><xenc:CipherValue>
oTvo+S22nsmS2Z/RtcoF8Hfh+jzMe0RkiafpoDpnoZTjPYZu6V+A4aEn032yCr4f
            </xenc:CipherValue></xenc:CipherData>
          </pskc:EncryptedValue>
          <pskc:ValueMAC>LP6xMvjtypbfT9PdkJhBZ+D6O4w=</pskc:ValueMAC>
        </pskc:Secret>
      </pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>
</pskc:KeyContainer>
"""
# The secret both figures carry (RFC 4226 appendix D's test key).
RFC_SECRET = b"12345678901234567890"

NS = (
    'xmlns="urn:ietf:params:xml:ns:keyprov:pskc" '
    'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" '
    'xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" '
    'xmlns:xenc11="http://www.w3.org/2009/xmlenc11#" '
    'xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"'
)
CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"


def cbc_encrypt(key: bytes, plain: bytes) -> bytes:
    """XML Encryption AES-CBC: random IV in front, PKCS#7 padding."""
    iv = secrets.token_bytes(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()


def _encrypted(raw: bytes) -> str:
    return (
        f'<EncryptedValue><xenc:EncryptionMethod Algorithm="{CBC}"/>'
        f"<xenc:CipherData><xenc:CipherValue>{base64.b64encode(raw).decode()}"
        "</xenc:CipherValue></xenc:CipherData></EncryptedValue>"
    )


def key_package(
    serial: str, secret: bytes, kind: str, *, digits: int = 6, data: str = "",
    enc_key: bytes | None = None, mac_key: bytes | None = None,
) -> str:  # fmt: skip
    """One KeyPackage; the secret plain, or encrypted and MACed when keys are given."""
    if enc_key is None:
        value = f"<PlainValue>{base64.b64encode(secret).decode()}</PlainValue>"
    else:
        assert mac_key is not None
        raw = cbc_encrypt(enc_key, secret)
        mac = base64.b64encode(hmac.new(mac_key, raw, hashlib.sha1).digest()).decode()
        value = f"{_encrypted(raw)}<ValueMAC>{mac}</ValueMAC>"
    return (
        f"<KeyPackage><DeviceInfo><Manufacturer>Acme</Manufacturer>"
        f"<SerialNo>{serial}</SerialNo></DeviceInfo>"
        f'<Key Id="k-{serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:{kind}">'
        f'<AlgorithmParameters><ResponseFormat Length="{digits}" Encoding="DECIMAL"/>'
        f"</AlgorithmParameters><Data><Secret>{value}</Secret>{data}</Data></Key></KeyPackage>"
    )


def container(packages: list[str], *, enc_key: bytes | None = None,
              mac_key: bytes | None = None, derived: str | None = None) -> bytes:  # fmt: skip
    """A KeyContainer; `derived` is a DerivedKey element (PBKDF2), else a KeyName."""
    head = ""
    if enc_key is not None:
        assert mac_key is not None
        head = derived or "<EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>"
        head += (
            '<MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1"><MACKey>'
            f'<xenc:EncryptionMethod Algorithm="{CBC}"/><xenc:CipherData><xenc:CipherValue>'
            f"{base64.b64encode(cbc_encrypt(enc_key, mac_key)).decode()}"
            "</xenc:CipherValue></xenc:CipherData></MACKey></MACMethod>"
        )
    body = "".join(packages)
    root = f'<KeyContainer Version="1.0" {NS}>{head}{body}</KeyContainer>'
    return f'<?xml version="1.0"?>{root}'.encode()


def pbkdf2_container(packages_for: object, password: str, iterations: int = 1000) -> bytes:
    """Encrypt under PBKDF2-HMAC-SHA1(password) as RFC 6030 §6.2 does; `packages_for`
    builds the packages from (enc_key, mac_key)."""
    salt = secrets.token_bytes(8)
    enc_key = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations, 16)
    mac_key = secrets.token_bytes(20)
    derived = (
        "<EncryptionKey><xenc11:DerivedKey><xenc11:KeyDerivationMethod "
        'Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">'
        f"<pkcs5:PBKDF2-params><Salt><Specified>{base64.b64encode(salt).decode()}</Specified>"
        f"</Salt><IterationCount>{iterations}</IterationCount><KeyLength>16</KeyLength>"
        "</pkcs5:PBKDF2-params></xenc11:KeyDerivationMethod></xenc11:DerivedKey></EncryptionKey>"
    )
    packages = packages_for(enc_key, mac_key)  # type: ignore[operator]
    return container(packages, enc_key=enc_key, mac_key=mac_key, derived=derived)
