// CurveKeys: the CurveZMQ keys (RFC 26) a client needs for a mesh with security = "curve"
// (docs/security.md): the mesh's public key (its server certificate's) and the client's own
// keypair, all in Z85 (40 characters). The same keys serve the request endpoint and the feed.
//
// Guarantees: load_curve_keys reads ZPL certificate files as bidmesh-keygen and pyzmq write them,
// with security/certificate.h's checks (valid Z85, the secret key matching the public one, files
// of at most 64 KiB). The client's secret file's mode is its owner's business: pyzmq writes it
// with the umask's mode (0644), and such keys must work unchanged; only the mesh refuses a secret
// certificate that others may read (its server certificate). Failures are values: a one-line
// reason naming the file; nothing here throws for a bad file.
//
// Thread-safe: functions over values and files. apply_curve_keys touches only the socket given,
// which (like every ZeroMQ socket) belongs to one thread.
//
// Part of bidmesh_client (installed as bidmesh::client, docs/client-library.md).
#pragma once

#include <filesystem>
#include <string>
#include <variant>

#include <zmq.hpp>

namespace bidmesh {

struct CurveKeys {
  std::string server_public_key;  // the mesh's (its server certificate's public key)
  std::string public_key;         // the client's own
  std::string secret_key;         // the client's own
};

// Makes `socket` a CurveZMQ client with `keys`.
// REQUIRES: called before connect; the keys are 40-character Z85 (else zmq::error_t, EINVAL).
void apply_curve_keys(zmq::socket_t& socket, const CurveKeys& keys);

// Reads the client's secret certificate (NAME.key_secret: it must hold the secret key) and
// the mesh's public certificate (the server's .key file). Failure: a one-line reason naming the
// file.
std::variant<CurveKeys, std::string> load_curve_keys(const std::filesystem::path& client_secret,
                                                      const std::filesystem::path& server_public);

}  // namespace bidmesh
