// CurveZMQ certificates: the ZPL files (security/zpl.h) that CZMQ's zcert and pyzmq's
// zmq.auth.create_certificates write, NAME.key (public) and NAME.key_secret (both keys):
//
//   #   ZeroMQ CURVE Public Certificate     (comments: anything)
//   metadata
//       name = "alice"                      (any fields, quoted or not, in file order)
//       roles = "bidder"
//   curve
//       public-key = "<40 characters of Z85>"
//       secret-key = "<40 characters of Z85>"   (the secret file only)
//
// Guarantees
// - A Certificate that a read function returns holds a valid Z85 public key, and a secret key
//   that is either empty (read_certificate of a public file) or valid and matching the public
//   key (read_secret_certificate always; read_certificate checks the match too).
// - read_secret_certificate refuses a file that group or others may access in any way (mode &
//   077, as ssh does for its private keys; the reason says "chmod 600 FILE"). The mode is read
//   from the open file, so a swap between check and read is not possible. Note that pyzmq writes
//   its secret file with the umask's mode (usually 0644): such a file needs that chmod.
// - write_certificate_pair never overwrites: each file is created with O_EXCL, the secret one
//   with mode 0600 from its creation (no moment where others may read it); both are fsynced with
//   their directory. On failure nothing it created is left behind.
// - Every failure is one line that names the file (and the line, for syntax).
// - Files are read only when they are regular files of at most 64 KiB (a FIFO or device in a
//   keys folder cannot block or flood a reader).
//
// Thread-safe: functions over values and files; concurrent writers of the same NAME race for
// O_EXCL and exactly one wins.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace bidmesh {

struct Certificate {
  std::string public_key;   // Z85, 40 chars
  std::string secret_key;   // Z85, 40 chars; empty for a public certificate
  std::vector<std::pair<std::string, std::string>> metadata;  // in file order, names unique
  // The value of metadata field `key`, nullopt when absent.
  std::optional<std::string> meta(std::string_view key) const;
};

// Reads any certificate (public or secret). Unknown sections and fields are ignored (zcert
// ignores them too); a field of `metadata` or `curve` given twice is refused.
// Failure: "FILE: reason" or "FILE: line N: reason".
std::variant<Certificate, std::string> read_certificate(const std::filesystem::path& file);

// Reads a `.key_secret` file. Refused: when group or others may access it; when it holds no
// secret key; when the secret key does not belong to the public key.
std::variant<Certificate, std::string> read_secret_certificate(const std::filesystem::path& file);

// Writes DIR/NAME.key (0644: public key and metadata) and DIR/NAME.key_secret (0600: both keys
// and metadata) holding a fresh keypair from zmq_curve_keypair. Metadata values are written
// double-quoted (CZMQ's style; pyzmq and zcert read both).
// REQUIRES: DIR exists. Refused: NAME that is not an identifier ([A-Za-z0-9_-], 1 to 64 bytes);
// a metadata name that is not a ZPL name, or a value holding '"' or a line end; either file
// existing already. Returns nullopt on success (and the certificate in *written if not null),
// else the reason.
std::optional<std::string> write_certificate_pair(const std::filesystem::path& dir, std::string_view name,
                                                  const std::vector<std::pair<std::string, std::string>>& metadata,
                                                  Certificate* written = nullptr);

}  // namespace bidmesh
