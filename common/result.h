// The one error convention of qufop (docs/error-handling.md): expected failures travel as
// Result<T> carrying an Error with a stable code, the failing call and errno; broken invariants
// abort. Exceptions never cross a component boundary or an Asio handler.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace qufop {

struct Error {
  // Stable, machine-readable code (also the "error" field of JSON error bodies):
  // invalid_argument, not_found, already_exists, permission_denied, unavailable, io,
  // timeout, conflict, internal, ...
  std::string code;
  // Human text naming what and where: "mkdir(/var/lib/qufop/x): Permission denied".
  std::string message;
  int sys_errno = 0;

  // "bind(127.0.0.1:7100): Address already in use" from a failed system call.
  static Error sys(std::string_view call, int err);
  static Error invalid(std::string message) { return {"invalid_argument", std::move(message), 0}; }
  static Error io(std::string message) { return {"io", std::move(message), 0}; }

  // Prefix context: err.wrap("reading config") -> "reading config: <message>".
  Error wrap(std::string_view context) const&;
  Error wrap(std::string_view context) &&;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return checked_value(); }
  const T& value() const& { return const_cast<Result*>(this)->checked_value(); }
  T&& value() && { return std::move(checked_value()); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const {
    if (ok()) std::abort();  // invariant: only asked of a failed result
    return std::get<1>(v_);
  }

 private:
  T& checked_value() {
    if (!ok()) std::abort();  // invariant: callers check ok() first
    return std::get<0>(v_);
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT: implicit
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    if (!failed_) std::abort();
    return error_;
  }

 private:
  Error error_;
  bool failed_ = false;
};

inline Result<void> ok() { return {}; }

}  // namespace qufop

// Propagate a failed Result from the enclosing function.
#define QF_TRY(expr)                                                                        \
  do {                                                                                      \
    if (auto qf_try_r_ = (expr); !qf_try_r_.ok()) return ::qufop::Error(qf_try_r_.error()); \
  } while (0)
