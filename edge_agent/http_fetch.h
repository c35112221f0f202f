// Package bytes over plain HTTP/1.1 from a cache or origin that serves artifacts by SHA-256
// (deploy/nginx/): one range per request, each on its own connection. Nothing from the server is
// trusted: the download is verified against its SHA-256 and the package against its signature, so
// a cache needs no trust and no TLS. Only http:// urls (IPv4/IPv6 hosts and names); no redirects.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace fedcal::edge_agent {

struct HttpUrl {
  std::string host;
  std::string port = "80";
  std::string path;  // starts with '/'
};
// Throws Error naming the url if it is not http://HOST[:PORT]/PATH.
HttpUrl parse_http_url(const std::string& url);

// A response's status line and headers (names lower-cased).
struct HttpResponseHead {
  int status = 0;
  std::map<std::string, std::string> headers;
};
// Parses `head` (everything before the blank line, without it). Throws Error on anything that is
// not an HTTP/1.x status line followed by NAME: VALUE lines, or over 100 headers.
HttpResponseHead parse_http_response_head(std::string_view head);

struct FetchedRange {
  uint64_t offset = 0;  // where the bytes start in the file
  uint64_t total = 0;   // the file's size, as the server says
  std::vector<uint8_t> data;
};
// GET `url` with Range: bytes=offset-(offset+length-1). Accepts 206 with a Content-Range that starts
// at `offset`, or 200 when `offset` is 0 (a server that ignores ranges: the first `length` bytes are
// kept). Throws Error (kIo for the network, kNotFound for 404, kInvalidInput for a response that
// does not fit) naming the url; every step is bounded by `timeout_ms`.
FetchedRange fetch_range(const std::string& url, uint64_t offset, uint64_t length, int timeout_ms);

}  // namespace fedcal::edge_agent
