/*
 * Host unit tests of the engine library's TensorRT-free parts (engine.h inline code + runtime/tensor.cpp): the shape
 * bounds check every Session::setInput() runs, and the float conversion of outputs. No TensorRT, no CUDA, no GPU.
 * Prints "N passed, N failed" and exits non-zero on any failure; tests/plugins/test_runtime_engine.py runs it.
 */
#include "engine.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

using debx::runtime::DataType;
using debx::runtime::HostTensor;
using debx::runtime::TensorInfo;

namespace
{

int gPassed = 0;
int gFailed = 0;

#define EXPECT(cond)                                                                                                   \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            throw std::runtime_error(std::string(#cond) + " (line " + std::to_string(__LINE__) + ")");                 \
        }                                                                                                              \
    } while (false)

void test(char const* name, std::function<void()> const& body)
{
    try
    {
        body();
        ++gPassed;
        std::printf("  ok     %s\n", name);
    }
    catch (std::exception const& e)
    {
        ++gFailed;
        std::printf("  FAILED %s: %s\n", name, e.what());
    }
}

//! The message of the std::invalid_argument `body` throws ("" when it throws nothing).
std::string refusal(std::function<void()> const& body)
{
    try
    {
        body();
    }
    catch (std::invalid_argument const& e)
    {
        return e.what();
    }
    return "";
}

TensorInfo inputIds()
{
    TensorInfo t;
    t.name = "input_ids";
    t.isInput = true;
    t.type = DataType::kInt32;
    t.shape = {-1, -1};
    t.minShape = {1, 1};
    t.optShape = {8, 128};
    t.maxShape = {32, 512};
    return t;
}

} // namespace

int main()
{
    std::printf("debx engine library host tests\n");

    test("shapes inside the profile pass, bounds included", [] {
        TensorInfo const t = inputIds();
        t.checkShape({1, 1});
        t.checkShape({8, 128});
        t.checkShape({32, 512});
    });

    test("a dimension past the profile's max or under its min is refused with the bounds", [] {
        TensorInfo const t = inputIds();
        std::string const big = refusal([&] { t.checkShape({33, 16}); });
        EXPECT(big
            == "input 'input_ids' shape (33, 16) is outside the plan's optimization profile (1, 1) .. (32, 512)");
        EXPECT(!refusal([&] { t.checkShape({4, 513}); }).empty());
        EXPECT(!refusal([&] { t.checkShape({0, 16}); }).empty());
        EXPECT(!refusal([&] { t.checkShape({-1, 16}); }).empty());
    });

    test("wrong rank is refused", [] {
        TensorInfo const t = inputIds();
        EXPECT(refusal([&] { t.checkShape({8}); }) == "input 'input_ids' has rank 2, got shape (8,)");
        EXPECT(!refusal([&] { t.checkShape({1, 2, 3}); }).empty());
    });

    test("a fixed dimension must match", [] {
        TensorInfo t = inputIds();
        t.shape = {-1, 128};
        t.minShape = {1, 128};
        t.maxShape = {32, 128};
        t.checkShape({5, 128});
        EXPECT(refusal([&] { t.checkShape({5, 64}); })
            == "input 'input_ids' dimension 1 is fixed at 128, got shape (5, 64)");
    });

    test("element sizes and names", [] {
        EXPECT(debx::runtime::dataTypeSize(DataType::kInt64) == 8);
        EXPECT(debx::runtime::dataTypeSize(DataType::kHalf) == 2);
        EXPECT(std::string(debx::runtime::dataTypeName(DataType::kBF16)) == "bfloat16");
        EXPECT(!refusal([] { debx::runtime::dataTypeSize(DataType::kOther); }).empty());
    });

    test("float16 and bfloat16 outputs convert to float32", [] {
        uint16_t const halves[] = {0x3C00, 0xC000, 0x3555, 0x0001, 0x7C00, 0x0000};
        HostTensor h{"logits", DataType::kHalf, {2, 3}, halves, sizeof(halves)};
        std::vector<float> const f = h.toFloat();
        EXPECT(f.size() == 6);
        EXPECT(f[0] == 1.0F && f[1] == -2.0F);
        EXPECT(std::fabs(f[2] - 0.333251953125F) < 1e-9F);
        EXPECT(f[3] == std::ldexp(1.0F, -24)); // smallest subnormal
        EXPECT(std::isinf(f[4]) && f[5] == 0.0F);
        uint16_t const bf[] = {0x3F80, 0xBFC0};
        HostTensor b{"logits", DataType::kBF16, {2}, bf, sizeof(bf)};
        EXPECT(b.toFloat() == std::vector<float>({1.0F, -1.5F}));
        float const plain[] = {0.25F, -7.0F};
        HostTensor p{"logits", DataType::kFloat, {1, 2}, plain, sizeof(plain)};
        EXPECT(p.toFloat() == std::vector<float>({0.25F, -7.0F}));
    });

    test("integer outputs and short buffers are refused by toFloat", [] {
        int32_t const ints[] = {1, 2};
        HostTensor i{"ids", DataType::kInt32, {2}, ints, sizeof(ints)};
        EXPECT(refusal([&] { i.toFloat(); }) == "output 'ids' is int32, not a floating-point tensor");
        float const one[] = {1.0F};
        HostTensor s{"logits", DataType::kFloat, {2}, one, sizeof(one)};
        EXPECT(!refusal([&] { s.toFloat(); }).empty());
    });

    std::printf("%d passed, %d failed\n", gPassed, gFailed);
    return gFailed == 0 ? 0 : 1;
}
