// Request signing with Qiniu's "Qiniu" (v2) scheme, so clients can reuse Qiniu SDK signers and
// keys: Authorization: Qiniu <AccessKey>:<urlsafe_base64(HMAC-SHA1(SecretKey, StringToSign))>.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qufop::auth {

// RFC 4648 §5 alphabet ('-', '_') with '=' padding, as Qiniu emits it.
std::string urlsafe_base64(std::string_view data);
// Accepts padded or unpadded input; anything else (standard '+' '/', stray '=', non-canonical
// trailing bits) is Error::invalid so one signature has exactly one spelling.
Result<std::string> urlsafe_base64_decode(std::string_view encoded);

// Raw 20-byte digest.
std::string hmac_sha1(std::string_view key, std::string_view data);

struct SignableRequest {
  std::string method;
  std::string path;
  std::string query;  // without '?'
  std::string host;
  // The request's Content-Type; a Content-Type entry in `headers` is not consulted.
  std::string content_type;
  // All request headers, names in any case; only X-Qiniu-* ones are signed.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

std::string string_to_sign(const SignableRequest& req);
std::string sign(std::string_view secret_key, const SignableRequest& req);
// "Qiniu <AK>:<sign>", the Authorization header value.
std::string authorization(std::string_view access_key, std::string_view secret_key,
                          const SignableRequest& req);

// "YYYYMMDDTHHMMSSZ" in UTC, the X-Qiniu-Date format; sub-second precision is dropped.
std::string format_qiniu_date(std::chrono::system_clock::time_point t);
// Exactly the format above with calendar-valid fields; also rejects dates system_clock cannot
// represent.
Result<std::chrono::system_clock::time_point> parse_qiniu_date(std::string_view text);

struct Credentials {
  std::string access_key;
  std::string secret_key;
};

// What a verified request proves: who signed it, the signature itself (one value for every
// spelling of the header the verifier accepts, so a replay check can key on it) and its date.
struct Verified {
  std::string access_key;
  std::string signature;                       // the decoded HMAC-SHA1 bytes
  std::chrono::system_clock::time_point date;  // X-Qiniu-Date
};

// Checks an incoming request's Authorization header. Every failure has code "unauthorized" and a
// message that never contains the secret key or the expected signature.
class Verifier {
 public:
  // lookup returns the secret key for an access key, or nullopt if unknown.
  using SecretLookup = std::function<std::optional<std::string>(std::string_view access_key)>;

  // `window` bounds |X-Qiniu-Date - now| to limit replay of captured requests.
  explicit Verifier(SecretLookup lookup, std::chrono::seconds window = std::chrono::minutes(15));

  // On success returns the signer, signature and date. `now` is injected (no direct clock reads
  // in the logic).
  Result<Verified> verify_full(std::string_view authorization_header, const SignableRequest& req,
                               std::chrono::system_clock::time_point now) const;
  // verify_full() for callers that need only the access key.
  Result<std::string> verify(std::string_view authorization_header, const SignableRequest& req,
                             std::chrono::system_clock::time_point now) const;

 private:
  // The request's X-Qiniu-Date, when it is within the window around `now`.
  Result<std::chrono::system_clock::time_point> check_date(
      const SignableRequest& req, std::chrono::system_clock::time_point now) const;

  SecretLookup lookup_;
  std::chrono::seconds window_;
};

// The cluster token daemons present to each other: `Authorization: Bearer <token>`.
std::string bearer(std::string_view token);
// The header carries exactly that token (compared in constant time).
bool bearer_matches(std::string_view authorization_header, std::string_view token);
// A token kept in a file, surrounding whitespace dropped; the read's error (not_found when the
// file is missing) or an empty string for an empty file.
Result<std::string> read_token_file(const std::string& path);

}  // namespace qufop::auth
