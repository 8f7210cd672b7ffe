#include <gtest/gtest.h>

#include "common/http.h"
#include "common/json.h"

namespace qufop {
namespace {

TEST(Json, ParseAndSerialize) {
  auto v = json::parse(R"({"a": 1, "b": "x", "c": [true, null]})");
  ASSERT_TRUE(v);
  auto o = json::get_object(*v, "body");
  ASSERT_TRUE(o);
  EXPECT_EQ(*json::get_int(**o, "a"), 1);
  EXPECT_EQ(*json::get_string(**o, "b"), "x");
  EXPECT_EQ(json::serialize(*v), R"({"a":1,"b":"x","c":[true,null]})");
}

TEST(Json, MalformedSaysWhere) {
  auto v = json::parse("{\n  \"a\": 1,\n  \"b\": ]\n}");
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, "invalid_argument");
  EXPECT_NE(v.error().message.find("line 3, column 8"), std::string::npos) << v.error().message;
  EXPECT_FALSE(json::parse(""));
  EXPECT_FALSE(json::parse("{} trailing"));
}

TEST(Json, FieldErrorsNameTheField) {
  auto v = json::parse(R"({"n": "seven", "s": 3})");
  auto o = json::get_object(*v, "body");
  auto n = json::get_int(**o, "n");
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().message, "field 'n': expected an integer");
  EXPECT_FALSE(json::get_string(**o, "s"));
  EXPECT_FALSE(json::get_bool(**o, "missing"));
  EXPECT_FALSE(json::get_object(json::Value(3), "body"));
}

TEST(Json, ErrorBodyShape) {
  auto body = json::error_body("not_found", "no \"x\"");
  EXPECT_EQ(body, R"({"error":"not_found","message":"no \"x\""})");
  auto r = http::Response::error(404, "not_found", "gone");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/json");
}

TEST(Url, DecodeEncodeAndQuery) {
  EXPECT_EQ(http::url_decode("a%20b+c%2Fd%zz%4"), "a b c/d%zz%4");
  EXPECT_EQ(http::url_encode("a b/c~"), "a%20b%2Fc~");
  http::Request r;
  std::tie(r.path, r.query) = http::split_target("/v1/x?wait=30s&index=5&url=http%3A%2F%2Fa");
  EXPECT_EQ(r.path, "/v1/x");
  EXPECT_EQ(r.query_param("wait"), "30s");
  EXPECT_EQ(r.query_param("url"), "http://a");
  EXPECT_EQ(r.query_param("none"), "");
}

}  // namespace
}  // namespace qufop
