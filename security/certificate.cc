#include "security/certificate.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <tuple>

#include "protocol/messages.h"
#include "security/keys.h"
#include "security/zpl.h"

namespace bidmesh {

namespace {

namespace fs = std::filesystem;

// A certificate is a few hundred bytes; the cap keeps a stray large file from being read whole.
constexpr off_t kMaxCertificateBytes = 64 * 1024;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error that a deferred close would lose.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

std::string errno_text(const fs::path& file, std::string_view what) {
  return file.string() + ": " + std::string(what) + ": " + std::strerror(errno);
}

struct FileText {
  std::string text;
  mode_t mode = 0;
};

std::variant<FileText, std::string> read_small_file(const fs::path& file) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is then refused as not regular.
  Fd fd(::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) return errno_text(file, "cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_text(file, "cannot stat");
  if (!S_ISREG(st.st_mode)) return file.string() + ": not a regular file";
  if (st.st_size > kMaxCertificateBytes) return file.string() + ": larger than 64 KiB, not a certificate";
  FileText out;
  out.mode = st.st_mode;
  std::array<char, 4096> buf;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_text(file, "cannot read");
    if (n == 0) break;
    out.text.append(buf.data(), static_cast<std::size_t>(n));
    if (out.text.size() > static_cast<std::size_t>(kMaxCertificateBytes))
      return file.string() + ": larger than 64 KiB, not a certificate";  // it grew while read
  }
  return out;
}

std::variant<Certificate, std::string> parse_certificate(std::string_view text, const fs::path& file) {
  const std::string where = file.string() + ": ";
  auto parsed = parse_zpl(text);
  if (auto* err = std::get_if<std::string>(&parsed)) return where + *err;
  const auto at = [&where](int line) { return where + "line " + std::to_string(line) + ": "; };

  Certificate cert;
  int public_line = 0;
  int secret_line = 0;
  for (const ZplProperty& p : std::get<std::vector<ZplProperty>>(parsed)) {
    if (p.path == "curve/public-key" || p.path == "curve/secret-key") {
      const bool is_public = p.path == "curve/public-key";
      int& line = is_public ? public_line : secret_line;
      if (line != 0) return at(p.line) + p.path.substr(6) + " given twice (also on line " + std::to_string(line) + ")";
      line = p.line;
      (is_public ? cert.public_key : cert.secret_key) = p.value;
    } else if (p.path.rfind("metadata/", 0) == 0 && p.path.find('/', 9) == std::string::npos) {
      std::string key = p.path.substr(9);
      if (cert.meta(key)) return at(p.line) + "metadata '" + key + "' given twice";
      cert.metadata.emplace_back(std::move(key), p.value);
    }
  }
  if (public_line == 0) return where + "no curve public-key (not a CurveZMQ certificate)";
  // A bare value ends at '#', which Z85 uses: a short key is most likely an unquoted one.
  const auto bad_key = [&](int line, std::string_view which, const std::string& value) {
    return at(line) + std::string(which) + " is not a key of 40 Z85 characters" +
           (value.size() < kCurveKeyZ85Chars ? " (quote it: a bare value ends at '#')" : "");
  };
  if (!is_valid_z85_key(cert.public_key)) return bad_key(public_line, "public-key", cert.public_key);
  if (!cert.secret_key.empty()) {
    if (!is_valid_z85_key(cert.secret_key)) return bad_key(secret_line, "secret-key", cert.secret_key);
    if (public_key_of(cert.secret_key) != cert.public_key)
      return at(secret_line) + "the secret-key does not belong to the public-key";
  }
  return cert;
}

// Creates `file` for writing; the mode is exact from creation on (O_CREAT applies the umask, so
// fchmod sets the intended bits on our own descriptor: a narrower umask must not leave a
// certificate unreadable to its owner, and nothing else can open the file in between).
std::variant<int, std::string> create_exclusive(const fs::path& file, mode_t mode) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      return file.string() + ": exists already (a certificate is never overwritten: remove it or pick another name)";
    return errno_text(file, "cannot create");
  }
  if (::fchmod(fd, mode) != 0) {
    std::string err = errno_text(file, "cannot set its mode");
    ::close(fd);
    return err;
  }
  return fd;
}

std::optional<std::string> write_all_and_sync(Fd& fd, const fs::path& file, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd.get(), text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_text(file, "cannot write");
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  if (::fsync(fd.get()) != 0) return errno_text(file, "cannot sync");
  if (fd.close() != 0) return errno_text(file, "cannot close");
  return std::nullopt;
}

std::optional<std::string> sync_dir(const fs::path& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) return errno_text(dir, "cannot sync the directory");
  return std::nullopt;
}

// The layout pyzmq writes (banner, metadata, curve), with quoted values as zcert writes them.
std::string certificate_text(const Certificate& cert, bool with_secret) {
  char stamp[32] = "";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (gmtime_r(&now, &tm) != nullptr) std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S UTC", &tm);
  std::string out = "#   ****  Generated on " + std::string(stamp) + " by bidmesh  ****\n";
  out += with_secret ? "#   ZeroMQ CURVE **Secret** Certificate\n"
                       "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
                     : "#   ZeroMQ CURVE Public Certificate\n"
                       "#   Exchange securely, or use a secure mechanism to verify the contents\n"
                       "#   of this file after exchange.\n";
  out += "\nmetadata\n";
  for (const auto& [key, value] : cert.metadata) out += "    " + key + " = \"" + value + "\"\n";
  out += "curve\n";
  out += "    public-key = \"" + cert.public_key + "\"\n";
  if (with_secret) out += "    secret-key = \"" + cert.secret_key + "\"\n";
  return out;
}

}  // namespace

std::optional<std::string> Certificate::meta(std::string_view key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return v;
  return std::nullopt;
}

std::variant<Certificate, std::string> read_certificate(const fs::path& file) {
  auto content = read_small_file(file);
  if (auto* err = std::get_if<std::string>(&content)) return std::move(*err);
  return parse_certificate(std::get<FileText>(content).text, file);
}

std::variant<Certificate, std::string> read_secret_certificate(const fs::path& file) {
  auto content = read_small_file(file);
  if (auto* err = std::get_if<std::string>(&content)) return std::move(*err);
  const FileText& ft = std::get<FileText>(content);
  if ((ft.mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(ft.mode & 07777));
    return file.string() + ": a secret certificate that group or others may access (mode " + mode +
           "): chmod 600 " + file.string();
  }
  auto cert = parse_certificate(ft.text, file);
  if (auto* c = std::get_if<Certificate>(&cert); c != nullptr && c->secret_key.empty())
    return file.string() + ": holds no curve secret-key (a public certificate, not the .key_secret file)";
  return cert;
}

std::optional<std::string> write_certificate_pair(const fs::path& dir, std::string_view name,
                                                  const std::vector<std::pair<std::string, std::string>>& metadata,
                                                  Certificate* written) {
  if (!is_valid_identifier(name))
    return "certificate name '" + std::string(name) + "': must be 1 to 64 of [A-Za-z0-9_-]";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return errno_text(dir, "cannot use the folder");
  if (!S_ISDIR(st.st_mode)) return dir.string() + ": not a folder";
  Certificate cert;
  for (const auto& [key, value] : metadata) {
    if (!is_valid_zpl_name(key) || key.find('/') != std::string::npos)
      return "metadata name '" + key + "': must be of [A-Za-z0-9$-_@.&+]";
    if (value.find_first_of("\"\r\n") != std::string::npos)
      return "metadata '" + key + "': the value may not hold '\"' or a line end";
    if (cert.meta(key)) return "metadata '" + key + "' given twice";
    cert.metadata.emplace_back(key, value);
  }
  std::array<char, kCurveKeyZ85Chars + 1> pub{};
  std::array<char, kCurveKeyZ85Chars + 1> sec{};
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
    return std::string("cannot make a keypair: ") + zmq_strerror(zmq_errno()) + " (libzmq built without CURVE?)";
  cert.public_key.assign(pub.data(), kCurveKeyZ85Chars);
  cert.secret_key.assign(sec.data(), kCurveKeyZ85Chars);

  const fs::path public_file = dir / (std::string(name) + ".key");
  const fs::path secret_file = dir / (std::string(name) + ".key_secret");
  std::vector<fs::path> created;
  const auto fail = [&created](std::string reason) -> std::optional<std::string> {
    for (const auto& f : created) ::unlink(f.c_str());
    return reason;
  };
  for (const auto& [file, mode, with_secret] :
       {std::tuple{secret_file, mode_t{0600}, true}, std::tuple{public_file, mode_t{0644}, false}}) {
    auto fd = create_exclusive(file, mode);
    if (auto* err = std::get_if<std::string>(&fd)) return fail(*err);
    created.push_back(file);
    Fd owned(std::get<int>(fd));
    if (auto err = write_all_and_sync(owned, file, certificate_text(cert, with_secret))) return fail(*err);
  }
  if (auto err = sync_dir(dir)) return fail(*err);
  if (written != nullptr) *written = std::move(cert);
  return std::nullopt;
}

}  // namespace bidmesh
