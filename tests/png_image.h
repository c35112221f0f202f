// Reads the PNG files a browser writes (8-bit RGB or RGBA, not interlaced) into pixels, so a test
// can check what a page looked like. Throws Error naming the file on anything else.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fedcal::testing {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

struct PngImage {
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<Rgb> pixels;  // row by row; alpha dropped

  static PngImage read(const std::string& path);
  // How many pixels are `colour` (each channel within `tolerance`).
  size_t count(Rgb colour, int tolerance = 8) const;
};

}  // namespace fedcal::testing
