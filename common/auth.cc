#include "common/auth.h"

#include <cctype>

#include "common/files.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace qufop::auth {
namespace {

namespace chr = std::chrono;

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr std::string_view kScheme = "Qiniu";
constexpr std::string_view kQiniuPrefix = "x-qiniu-";
constexpr std::string_view kDateHeader = "X-Qiniu-Date";
constexpr std::size_t kSha1Size = 20;
// Cap on attacker-supplied text echoed into error messages.
constexpr std::size_t kMaxEcho = 64;

// ASCII-only on purpose: header names are ASCII and the locale must not change signatures.
char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
  return out;
}

bool iequals(std::string_view a, std::string_view b) { return lower(a) == lower(b); }

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t";
  const auto first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

// Same result as Go's textproto.CanonicalMIMEHeaderKey, which Qiniu's signers use.
std::string canonical_header(std::string_view name) {
  std::string out = lower(name);
  bool word_start = true;
  for (char& c : out) {
    if (word_start) c = ascii_upper(c);
    word_start = c == '-';
  }
  return out;
}

int decode_char(char c) {
  const auto pos = kAlphabet.find(c);
  return pos == std::string_view::npos ? -1 : static_cast<int>(pos);
}

Error unauthorized(std::string message) { return {"unauthorized", std::move(message), 0}; }

std::string quoted_echo(std::string_view s) {
  if (s.size() <= kMaxEcho) return "\"" + std::string(s) + "\"";
  return "\"" + std::string(s.substr(0, kMaxEcho)) + "...\"";
}

std::string qiniu_headers(const SignableRequest& req) {
  std::vector<std::pair<std::string, std::string_view>> picked;
  for (const auto& [name, value] : req.headers) {
    // Go's signer requires a non-empty suffix after the prefix; match it.
    if (name.size() > kQiniuPrefix.size() && lower(name).starts_with(kQiniuPrefix)) {
      picked.emplace_back(canonical_header(name), value);
    }
  }
  // Stable, so repeated headers keep their wire order on both sides.
  std::stable_sort(picked.begin(), picked.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string out;
  for (const auto& [name, value] : picked) out += "\n" + name + ": " + std::string(value);
  return out;
}

bool body_is_signed(const SignableRequest& req) {
  if (req.body.empty()) return false;
  const std::string_view content_type = req.content_type;
  const std::string media = lower(trim(content_type.substr(0, content_type.find(';'))));
  return media == "application/json" || media == "application/x-www-form-urlencoded";
}

// "40m", "15m1s", "2h", "3d4h": enough to see at a glance how far off a client clock is.
std::string format_duration(chr::seconds d) {
  if (d.count() == 0) return "0s";
  std::string out;
  auto left = d.count();
  for (auto [unit, suffix] :
       {std::pair<std::int64_t, char>{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}}) {
    if (left >= unit) out += std::to_string(left / unit) + suffix;
    left %= unit;
  }
  return out;
}

// Parses exactly `n` ASCII digits at `text[pos]`; -1 if any is not a digit.
int digits(std::string_view text, std::size_t pos, std::size_t n) {
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (text[i] < '0' || text[i] > '9') return -1;
    v = v * 10 + (text[i] - '0');
  }
  return v;
}

struct Credential {
  std::string_view access_key;
  std::string signature;  // raw HMAC bytes
};

Result<Credential> parse_credential(std::string_view header) {
  header = trim(header);
  if (header.empty()) return unauthorized("missing Authorization header");
  const auto space = header.find(' ');
  if (header.substr(0, space) != kScheme) {
    return unauthorized("unsupported Authorization scheme, want \"Qiniu <AccessKey>:<Sign>\"");
  }
  const std::string_view cred = space == std::string_view::npos ? "" : trim(header.substr(space));
  const auto colon = cred.find(':');
  const Error malformed =
      unauthorized("malformed Qiniu credential, want \"Qiniu <AccessKey>:<Sign>\"");
  if (colon == std::string_view::npos || colon == 0) return malformed;
  auto sig = urlsafe_base64_decode(cred.substr(colon + 1));
  if (!sig.ok() || sig->size() != kSha1Size) return malformed;
  return Credential{cred.substr(0, colon), std::move(*sig)};
}

const std::string* find_header(const SignableRequest& req, std::string_view name) {
  for (const auto& [n, v] : req.headers) {
    if (iequals(n, name)) return &v;
  }
  return nullptr;
}

}  // namespace

std::string urlsafe_base64(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < data.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, data.size() - i);
    std::uint32_t block = 0;
    for (std::size_t j = 0; j < 3; ++j) {
      block = (block << 8) | (j < n ? static_cast<unsigned char>(data[i + j]) : 0u);
    }
    for (std::size_t j = 0; j < 4; ++j) {
      out += j <= n ? kAlphabet[(block >> (18 - 6 * j)) & 0x3f] : '=';
    }
  }
  return out;
}

Result<std::string> urlsafe_base64_decode(std::string_view encoded) {
  std::string_view body = encoded;
  if (encoded.size() % 4 == 0) {
    // Padding only completes a final quantum, never more than two characters.
    for (int i = 0; i < 2 && body.ends_with('='); ++i) body.remove_suffix(1);
  }
  if (body.size() % 4 == 1) {
    return Error::invalid("base64: length " + std::to_string(encoded.size()) + " is invalid");
  }
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const int v = decode_char(body[i]);
    if (v < 0) {
      return Error::invalid("base64: invalid character '" + std::string(1, body[i]) +
                            "' at offset " + std::to_string(i));
    }
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) {
    return Error::invalid("base64: non-zero trailing bits");
  }
  return out;
}

std::string hmac_sha1(std::string_view key, std::string_view data) {
  // OpenSSL may treat a null pointer as "no key"/"no data"; always hand it real memory.
  static const unsigned char kNothing = 0;
  const auto* k = key.empty() ? &kNothing : reinterpret_cast<const unsigned char*>(key.data());
  const auto* d = data.empty() ? &kNothing : reinterpret_cast<const unsigned char*>(data.data());
  if (key.size() > INT_MAX) std::abort();  // invariant: keys are short secrets
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (HMAC(EVP_sha1(), k, static_cast<int>(key.size()), d, data.size(), md.data(), &len) ==
          nullptr ||
      len != kSha1Size) {
    std::abort();  // invariant: SHA-1 HMAC is always available in libcrypto
  }
  return std::string(reinterpret_cast<const char*>(md.data()), len);
}

std::string string_to_sign(const SignableRequest& req) {
  std::string data = req.method + " " + req.path;
  if (!req.query.empty()) data += "?" + req.query;
  data += "\nHost: " + req.host;
  if (!req.content_type.empty()) data += "\nContent-Type: " + req.content_type;
  data += qiniu_headers(req);
  data += "\n\n";
  if (body_is_signed(req)) data += req.body;
  return data;
}

std::string sign(std::string_view secret_key, const SignableRequest& req) {
  return urlsafe_base64(hmac_sha1(secret_key, string_to_sign(req)));
}

std::string authorization(std::string_view access_key, std::string_view secret_key,
                          const SignableRequest& req) {
  return std::string(kScheme) + " " + std::string(access_key) + ":" + sign(secret_key, req);
}

std::string format_qiniu_date(chr::system_clock::time_point t) {
  const auto secs = chr::floor<chr::seconds>(t);
  const auto day = chr::floor<chr::days>(secs);
  const chr::year_month_day ymd(day);
  const chr::hh_mm_ss hms(secs - day);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d%02u%02uT%02d%02d%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

Result<chr::system_clock::time_point> parse_qiniu_date(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return Error::invalid("bad date " + quoted_echo(text) + ": " + std::string(why) +
                          " (want YYYYMMDDTHHMMSSZ)");
  };
  if (text.size() != 16 || text[8] != 'T' || text[15] != 'Z') return bad("wrong format");
  const int y = digits(text, 0, 4), mo = digits(text, 4, 2), d = digits(text, 6, 2);
  const int h = digits(text, 9, 2), mi = digits(text, 11, 2), s = digits(text, 13, 2);
  if (std::min({y, mo, d, h, mi, s}) < 0) return bad("non-digit in a numeric field");
  const chr::year_month_day ymd{chr::year(y), chr::month(static_cast<unsigned>(mo)),
                                chr::day(static_cast<unsigned>(d))};
  if (!ymd.ok()) return bad("no such calendar day");
  if (h > 23 || mi > 59 || s > 59) return bad("time of day out of range");
  const chr::sys_seconds secs =
      chr::sys_days(ymd) + chr::hours(h) + chr::minutes(mi) + chr::seconds(s);
  // system_clock counts nanoseconds in 64 bits (years ~1678-2262); beyond that it would overflow.
  using Tp = chr::system_clock::time_point;
  if (secs.time_since_epoch() > chr::duration_cast<chr::seconds>(Tp::max().time_since_epoch()) ||
      secs.time_since_epoch() < chr::duration_cast<chr::seconds>(Tp::min().time_since_epoch())) {
    return bad("outside the representable range");
  }
  return chr::time_point_cast<Tp::duration>(secs);
}

Verifier::Verifier(SecretLookup lookup, chr::seconds window)
    : lookup_(std::move(lookup)), window_(window) {
  if (!lookup_ || window_ < chr::seconds(0)) std::abort();  // invariant: misconfigured verifier
}

Result<chr::system_clock::time_point> Verifier::check_date(
    const SignableRequest& req, chr::system_clock::time_point now) const {
  const std::string* raw = find_header(req, kDateHeader);
  if (raw == nullptr) return unauthorized("missing X-Qiniu-Date header");
  auto date = parse_qiniu_date(trim(*raw));
  if (!date.ok()) return unauthorized("X-Qiniu-Date: " + date.error().message);
  // Compare whole seconds first: the raw nanosecond difference of far-apart time points can
  // overflow. Only when that is near the edge is the exact (small) difference taken.
  const chr::seconds coarse = chr::floor<chr::seconds>(*date) - chr::floor<chr::seconds>(now);
  bool inside = chr::abs(coarse) <= window_ + chr::seconds(1);
  if (inside) inside = chr::abs(*date - now) <= window_;
  if (inside) return *date;
  return unauthorized("request date " + format_qiniu_date(*date) + " is " +
                      format_duration(chr::abs(coarse)) +
                      (coarse.count() > 0 ? " ahead of" : " behind") +
                      " server time, outside the ±" + format_duration(window_) + " window");
}

Result<Verified> Verifier::verify_full(std::string_view authorization_header,
                                       const SignableRequest& req,
                                       chr::system_clock::time_point now) const {
  auto cred = parse_credential(authorization_header);
  if (!cred.ok()) return cred.error();
  const std::optional<std::string> secret = lookup_(cred->access_key);
  if (!secret) return unauthorized("unknown access key " + quoted_echo(cred->access_key));
  auto date = check_date(req, now);
  if (!date.ok()) return date.error();
  const std::string expected = hmac_sha1(*secret, string_to_sign(req));
  if (CRYPTO_memcmp(expected.data(), cred->signature.data(), kSha1Size) != 0) {
    return unauthorized("signature mismatch for access key " + quoted_echo(cred->access_key));
  }
  return Verified{std::string(cred->access_key), std::move(cred->signature), *date};
}

Result<std::string> Verifier::verify(std::string_view authorization_header,
                                     const SignableRequest& req,
                                     chr::system_clock::time_point now) const {
  auto v = verify_full(authorization_header, req, now);
  if (!v.ok()) return v.error();
  return std::move(v->access_key);
}

std::string bearer(std::string_view token) { return "Bearer " + std::string(token); }

bool bearer_matches(std::string_view authorization_header, std::string_view token) {
  std::string expected = bearer(token);
  return authorization_header.size() == expected.size() &&
         CRYPTO_memcmp(authorization_header.data(), expected.data(), expected.size()) == 0;
}

Result<std::string> read_token_file(const std::string& path) {
  auto text = read_text_file(path);
  if (!text) return text.error();
  std::string_view t = *text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  return std::string(t);
}

}  // namespace qufop::auth
