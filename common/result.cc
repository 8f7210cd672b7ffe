#include "common/result.h"

#include <cstring>

namespace qufop {

Error Error::sys(std::string_view call, int err) {
  std::string code = "io";
  switch (err) {
    case EACCES:
    case EPERM:
      code = "permission_denied";
      break;
    case ENOENT:
      code = "not_found";
      break;
    case EEXIST:
      code = "already_exists";
      break;
    case EINVAL:
      code = "invalid_argument";
      break;
    case ETIMEDOUT:
      code = "timeout";
      break;
    case EADDRINUSE:
    case ECONNREFUSED:
    case EAGAIN:
      code = "unavailable";
      break;
    default:
      break;
  }
  return {std::move(code), std::string(call) + ": " + std::strerror(err), err};
}

Error Error::wrap(std::string_view context) const& {
  Error e = *this;
  return std::move(e).wrap(context);
}

Error Error::wrap(std::string_view context) && {
  message = std::string(context) + ": " + message;
  return std::move(*this);
}

}  // namespace qufop
