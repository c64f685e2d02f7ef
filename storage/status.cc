// Status: names of the codes and the one-line rendering.
#include "storage/status.h"

#include <cstring>

namespace bidmesh {

const char* code_name(Status::Code code) {
  switch (code) {
    case Status::Code::ok: return "ok";
    case Status::Code::corruption: return "corruption";
    case Status::Code::io_error: return "io_error";
    case Status::Code::no_space: return "no_space";
    case Status::Code::invalid_argument: return "invalid_argument";
    case Status::Code::not_found: return "not_found";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  std::string s = code_name(code_);
  s += ": ";
  s += message_;
  if (err_ != 0) {
    s += " (";
    s += std::strerror(err_);
    s += ")";
  }
  return s;
}

}  // namespace bidmesh
