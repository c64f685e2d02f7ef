// Status: the outcome of a storage operation, as in leveldb: expected failures (a damaged log, a
// full disk, a failed write) are values, never exceptions. An ok Status holds no message and
// allocates nothing, so it is cheap to return on the hot path.
//
// Codes:
//   ok                everything done
//   corruption        stored bytes fail a check (CRC, length, a missing segment); the message
//                     names the file, the offset and what the operator can do
//   io_error          a system call failed; err() holds its errno (0 when none)
//   no_space          the disk is full: the operation did nothing and may succeed later
//   invalid_argument  the caller asked for something impossible (a payload too large, a
//                     position that is not the end of the log)
//   not_found         a file or directory does not exist
//
// Thread-compatible: a Status is a plain value.
#pragma once

#include <string>
#include <utility>

namespace bidmesh {

class Status {
 public:
  enum class Code { ok, corruption, io_error, no_space, invalid_argument, not_found };

  Status() = default;  // ok
  static Status OK() { return Status(); }
  static Status corruption(std::string msg) { return Status(Code::corruption, std::move(msg), 0); }
  // err: the errno of the failed call, 0 if none.
  static Status io_error(std::string msg, int err = 0) { return Status(Code::io_error, std::move(msg), err); }
  static Status no_space(std::string msg) { return Status(Code::no_space, std::move(msg), 0); }
  static Status invalid_argument(std::string msg) {
    return Status(Code::invalid_argument, std::move(msg), 0);
  }
  static Status not_found(std::string msg) { return Status(Code::not_found, std::move(msg), 0); }

  bool ok() const { return code_ == Code::ok; }
  Code code() const { return code_; }
  int err() const { return err_; }
  const std::string& message() const { return message_; }
  bool is_corruption() const { return code_ == Code::corruption; }
  bool is_no_space() const { return code_ == Code::no_space; }
  bool is_io_error() const { return code_ == Code::io_error; }
  bool is_invalid_argument() const { return code_ == Code::invalid_argument; }
  bool is_not_found() const { return code_ == Code::not_found; }

  // One line: "ok", or "<code>: <message>", with " (<strerror(err)>)" when err() != 0.
  std::string to_string() const;

 private:
  Status(Code code, std::string msg, int err) : code_(code), err_(err), message_(std::move(msg)) {}

  Code code_ = Code::ok;
  int err_ = 0;
  std::string message_;
};

// "ok", "corruption", "io_error", "no_space", "invalid_argument" or "not_found".
const char* code_name(Status::Code code);

}  // namespace bidmesh
