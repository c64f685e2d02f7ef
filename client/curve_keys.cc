// CurveKeys: loading client keys from certificate files and applying them (see curve_keys.h).
#include "client/curve_keys.h"

#include "security/certificate.h"

namespace bidmesh {

void apply_curve_keys(zmq::socket_t& socket, const CurveKeys& keys) {
  socket.set(zmq::sockopt::curve_serverkey, keys.server_public_key);
  socket.set(zmq::sockopt::curve_publickey, keys.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

std::variant<CurveKeys, std::string> load_curve_keys(const std::filesystem::path& client_secret,
                                                      const std::filesystem::path& server_public) {
  auto own = read_certificate(client_secret);
  if (auto* error = std::get_if<std::string>(&own)) return *error;
  if (std::get<Certificate>(own).secret_key.empty())
    return client_secret.string() + ": holds no secret key (give the NAME.key_secret file, not NAME.key)";
  auto server = read_certificate(server_public);
  if (auto* error = std::get_if<std::string>(&server)) return *error;
  const Certificate& mine = std::get<Certificate>(own);
  return CurveKeys{std::get<Certificate>(server).public_key, mine.public_key, mine.secret_key};
}

}  // namespace bidmesh
