"""CurveZMQ keys of a client of a mesh with security = "curve" (docs/security.md).

Keys are ZPL certificate files as bidmesh-keygen and pyzmq's zmq.auth.create_certificates write
them: NAME.key (public key and metadata) and NAME.key_secret (both keys). A client needs its own
secret file and the mesh's public file (the `.key` of the mesh's server_certificate).
"""

import os
from dataclasses import dataclass

import zmq
import zmq.auth

from .errors import CertificateError


@dataclass(frozen=True)
class CurveKeys:
    """Z85 keys (40 bytes each): the mesh's public key and the client's own keypair."""

    server_public_key: bytes
    public_key: bytes
    secret_key: bytes

    def apply(self, socket):
        """Makes `socket` a CurveZMQ client with these keys. Call it before connect."""
        socket.curve_serverkey = self.server_public_key
        socket.curve_publickey = self.public_key
        socket.curve_secretkey = self.secret_key


def load_curve_keys(client_secret_file, server_public_file):
    """Reads the client's secret certificate and the mesh's public one; returns CurveKeys.

    Refused with CertificateError: a secret file without a secret key or whose secret key does
    not belong to its public key, a file zmq.auth cannot read. The secret file's mode is not
    checked: pyzmq's create_certificates writes it with the umask's mode (0644), and such keys
    must work unchanged (only the mesh refuses a readable server certificate; docs/security.md).
    """
    client_secret_file = os.fspath(client_secret_file)
    server_public_file = os.fspath(server_public_file)
    if not os.path.isfile(client_secret_file):
        raise CertificateError("%s: cannot read it: no such file" % client_secret_file)
    public, secret = _load(client_secret_file)
    if not secret:
        raise CertificateError("%s: holds no secret-key; a client needs its NAME.key_secret file" % client_secret_file)
    if zmq.curve_public(secret) != public:
        raise CertificateError("%s: its secret-key does not belong to its public-key" % client_secret_file)
    server_public, _ = _load(server_public_file)
    return CurveKeys(server_public_key=server_public, public_key=public, secret_key=secret)


def _load(path):
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CertificateError("%s: not a readable ZPL certificate: %s" % (path, e)) from None
    if not public or len(public) != 40:
        raise CertificateError("%s: holds no valid public-key (40 characters of Z85)" % path)
    return public, secret
