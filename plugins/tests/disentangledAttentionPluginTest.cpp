/*
 * Host unit tests of the DebxDisentangledAttention plugin class and creator: attribute validation, serialization
 * round trip, shape rules with symbolic dimensions, format support (INT8 refused), runtime shape checks.
 *
 * Links libdebx_plugins.so (and so the CUDA runtime) but never launches a kernel: no GPU needed. Prints
 * "N passed, N failed" and exits non-zero on any failure; tests/plugins/test_plugin_build.py runs it.
 */
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <NvInferRuntime.h>

#include "disentangledAttentionPlugin.h"
#include "registry.h"

using namespace nvinfer1;
using debx::plugin::DisentangledAttentionAttributes;
using debx::plugin::DisentangledAttentionPlugin;

namespace
{

int gPassed = 0;
int gFailed = 0;
std::string gCurrent;

#define EXPECT(cond)                                                                                                   \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("  FAILED %s: %s (line %d)\n", gCurrent.c_str(), #cond, __LINE__);                           \
            throw std::runtime_error("expectation failed");                                                            \
        }                                                                                                              \
    } while (false)

void test(char const* name, std::function<void()> const& body)
{
    gCurrent = name;
    try
    {
        body();
        ++gPassed;
        std::printf("  ok     %s\n", name);
    }
    catch (std::exception const& e)
    {
        ++gFailed;
        std::printf("  FAILED %s (%s)\n", name, e.what());
    }
}

// ---- a logger that records what the plugin reports ----------------------------------------------------------------

class RecordingLogger : public ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            last = msg;
        }
    }
    std::string last;
};

class Finder : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

RecordingLogger gLogger;
Finder gFinder(&gLogger);

// ---- IExprBuilder test double: symbolic or constant dimensions ----------------------------------------------------

class FakeDimImpl : public apiv::VDimensionExpr
{
public:
    FakeDimImpl(bool constant, int64_t value)
        : mConstant(constant)
        , mValue(value)
    {
    }
    bool isConstant() const override
    {
        return mConstant;
    }
    int64_t getConstantValue() const override
    {
        return mConstant ? mValue : std::numeric_limits<int64_t>::min();
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    bool mConstant;
    int64_t mValue;
};

class FakeDim : public IDimensionExpr
{
public:
    FakeDim(bool constant, int64_t value)
        : mFake(constant, value)
    {
        mImpl = &mFake;
    }

private:
    FakeDimImpl mFake;
};

class FakeBuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        return make(true, value);
    }
    IDimensionExpr const* operation(DimensionOperation, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return make(false, 0);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return make(false, 0);
    }
    IDimensionExpr const* make(bool constant, int64_t value)
    {
        mOwned.push_back(std::make_unique<FakeDim>(constant, value));
        return mOwned.back().get();
    }

private:
    std::vector<std::unique_ptr<FakeDim>> mOwned;
};

class FakeBuilder : public IExprBuilder
{
public:
    FakeBuilder()
    {
        mImpl = &mFake;
    }
    IDimensionExpr const* symbol()
    {
        return mFake.make(false, 0);
    }
    IDimensionExpr const* value(int64_t v)
    {
        return mFake.make(true, v);
    }

private:
    FakeBuilderImpl mFake;
};

// ---- helpers ----------------------------------------------------------------------------------------------------------

IPluginCreatorV3One* creator()
{
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), "DebxDisentangledAttention") == 0)
        {
            return c;
        }
    }
    return nullptr;
}

//! Build-time fields like TensorRT's ONNX parser produces them (INT -> kINT32, FLOAT -> kFLOAT32).
struct Fields
{
    int32_t numHeads = 12;
    float scale = 0.0721687837F; // 1 / sqrt(64 * 3)
    int32_t span = 256;
    int32_t buckets = 256;
    int32_t maxRel = 512;
    int32_t c2p = 1;
    int32_t p2c = 1;
    std::vector<PluginField> list;
    PluginFieldCollection fc{};

    PluginFieldCollection const* collection(char const* skip = nullptr)
    {
        list.clear();
        auto add = [&](char const* name, void const* data, PluginFieldType type) {
            if (skip == nullptr || std::strcmp(skip, name) != 0)
            {
                list.emplace_back(name, data, type, 1);
            }
        };
        add("num_heads", &numHeads, PluginFieldType::kINT32);
        add("scale", &scale, PluginFieldType::kFLOAT32);
        add("span", &span, PluginFieldType::kINT32);
        add("position_buckets", &buckets, PluginFieldType::kINT32);
        add("max_relative_positions", &maxRel, PluginFieldType::kINT32);
        add("c2p", &c2p, PluginFieldType::kINT32);
        add("p2c", &p2c, PluginFieldType::kINT32);
        fc.nbFields = static_cast<int32_t>(list.size());
        fc.fields = list.data();
        return &fc;
    }
};

std::unique_ptr<DisentangledAttentionPlugin> create(PluginFieldCollection const* fc, TensorRTPhase phase)
{
    gLogger.last.clear();
    IPluginV3* p = creator()->createPlugin("attn", fc, phase);
    return std::unique_ptr<DisentangledAttentionPlugin>(static_cast<DisentangledAttentionPlugin*>(p));
}

void expectRejected(PluginFieldCollection const* fc, char const* reason)
{
    auto p = create(fc, TensorRTPhase::kBUILD);
    EXPECT(p == nullptr);
    if (gLogger.last.find(reason) == std::string::npos)
    {
        std::printf("  log was: %s\n", gLogger.last.c_str());
    }
    EXPECT(gLogger.last.find(reason) != std::string::npos);
}

Dims dims(std::initializer_list<int64_t> values)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        d.d[i++] = v;
    }
    return d;
}

DynamicPluginTensorDesc desc(DataType type, Dims declared, Dims max, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    d.desc.dims = declared;
    d.desc.scale = -1.0F;
    d.min = max;
    d.opt = max;
    d.max = max;
    return d;
}

//! query/key/value (B, N, 768), tables (512, 768), mask (B, N), output; build-time dims have wildcards.
std::vector<DynamicPluginTensorDesc> ioDescs(DataType type, int64_t rows = 512, int64_t maskN = 128)
{
    Dims const qkv = dims({-1, -1, 768});
    Dims const qkvMax = dims({8, 128, 768});
    return {desc(type, qkv, qkvMax), desc(type, qkv, qkvMax), desc(type, qkv, qkvMax),
        desc(type, dims({rows, 768}), dims({rows, 768})), desc(type, dims({rows, 768}), dims({rows, 768})),
        desc(DataType::kINT32, dims({-1, -1}), dims({8, maskN})), desc(type, qkv, qkvMax)};
}

std::vector<PluginTensorDesc> runtimeDescs(DataType type, int64_t b, int64_t n, int64_t maskN)
{
    auto make = [&](DataType t, Dims d) {
        PluginTensorDesc x{};
        x.type = t;
        x.format = TensorFormat::kLINEAR;
        x.dims = d;
        x.scale = -1.0F;
        return x;
    };
    return {make(type, dims({b, n, 768})), make(type, dims({b, n, 768})), make(type, dims({b, n, 768})),
        make(type, dims({512, 768})), make(type, dims({512, 768})), make(DataType::kINT32, dims({b, maskN}))};
}

} // namespace

int main()
{
    setLoggerFinder(&gFinder);
    std::printf("DebxDisentangledAttention plugin host tests\n");

    test("library exports one V3 creator with name, version, namespace", [] {
        int32_t n = -1;
        getCreators(n);
        EXPECT(n == 1);
        IPluginCreatorV3One* c = creator();
        EXPECT(c != nullptr);
        EXPECT(std::string(c->getPluginVersion()) == "1");
        EXPECT(std::string(c->getPluginNamespace()).empty());
        EXPECT(std::string(c->getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE");
        PluginFieldCollection const* names = c->getFieldNames();
        EXPECT(names != nullptr && names->nbFields == 7);
        EXPECT(std::string(names->fields[0].name) == "num_heads");
    });

    test("createPlugin parses the ONNX parser's fields", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        EXPECT(p != nullptr);
        DisentangledAttentionAttributes const& a = p->attributes();
        EXPECT(a.numHeads == 12 && a.span == 256 && a.positionBuckets == 256 && a.maxRelativePositions == 512);
        EXPECT(a.c2p == 1 && a.p2c == 1 && a.scale == f.scale);
        EXPECT(std::string(p->getPluginName()) == "DebxDisentangledAttention");
        for (auto type : {PluginCapabilityType::kCORE, PluginCapabilityType::kBUILD, PluginCapabilityType::kRUNTIME})
        {
            EXPECT(p->getCapabilityInterface(type) != nullptr);
        }
        EXPECT(p->getNbOutputs() == 1);
        EXPECT(std::string(p->getMetadataString()).find("num_heads=12") != std::string::npos);
    });

    test("createPlugin accepts int64 / float64 fields and linear positions", [] {
        int64_t heads = 4, span = 32, buckets = -1, maxRel = 32, c2p = 1, p2c = 0;
        double scale = 0.125;
        std::vector<PluginField> list{{"num_heads", &heads, PluginFieldType::kINT64, 1},
            {"scale", &scale, PluginFieldType::kFLOAT64, 1}, {"span", &span, PluginFieldType::kINT64, 1},
            {"position_buckets", &buckets, PluginFieldType::kINT64, 1},
            {"max_relative_positions", &maxRel, PluginFieldType::kINT64, 1},
            {"c2p", &c2p, PluginFieldType::kINT64, 1}, {"p2c", &p2c, PluginFieldType::kINT64, 1}};
        PluginFieldCollection fc{static_cast<int32_t>(list.size()), list.data()};
        auto p = create(&fc, TensorRTPhase::kBUILD);
        EXPECT(p != nullptr);
        EXPECT(p->attributes().numHeads == 4 && p->attributes().positionBuckets == -1 && p->attributes().p2c == 0);
        EXPECT(p->attributes().scale == 0.125F);
    });

    test("attribute validation errors", [] {
        {
            Fields f;
            f.numHeads = 0;
            expectRejected(f.collection(), "num_heads must be > 0");
        }
        {
            Fields f;
            f.span = 0;
            expectRejected(f.collection(), "span must be > 0");
        }
        {
            Fields f;
            f.c2p = 2;
            expectRejected(f.collection(), "c2p must be 0 or 1");
        }
        {
            Fields f;
            f.p2c = -1;
            expectRejected(f.collection(), "p2c must be 0 or 1");
        }
        {
            Fields f;
            f.scale = -1.0F;
            expectRejected(f.collection(), "scale must be a finite number > 0");
        }
        {
            Fields f;
            f.maxRel = 100; // mid = 128: log((max_rel - 1) / mid) would be negative
            expectRejected(f.collection(), "max_relative_positions");
        }
        {
            Fields f;
            expectRejected(f.collection("num_heads"), "missing required attribute 'num_heads'");
        }
        {
            Fields f;
            f.collection();
            int32_t wrong = 1;
            f.list[1] = PluginField("scale", &wrong, PluginFieldType::kINT32, 1);
            expectRejected(&f.fc, "'scale' must be a floating-point number");
        }
        {
            Fields f;
            f.collection();
            f.list.emplace_back("spam", &f.span, PluginFieldType::kINT32, 1);
            f.fc.nbFields = static_cast<int32_t>(f.list.size());
            f.fc.fields = f.list.data();
            expectRejected(&f.fc, "unknown attribute 'spam'");
        }
        EXPECT(creator()->createPlugin("attn", nullptr, TensorRTPhase::kBUILD) == nullptr);
    });

    test("serialization round trip: getFieldsToSerialize -> createPlugin(kRUNTIME)", [] {
        for (int32_t buckets : {256, -1})
        {
            Fields f;
            f.buckets = buckets;
            f.p2c = buckets > 0 ? 1 : 0;
            auto p = create(f.collection(), TensorRTPhase::kBUILD);
            EXPECT(p != nullptr);
            PluginFieldCollection const* stored = p->getFieldsToSerialize();
            EXPECT(stored != nullptr && stored->nbFields == 1);
            EXPECT(stored->fields[0].type == PluginFieldType::kUNKNOWN);
            auto q = create(stored, TensorRTPhase::kRUNTIME);
            EXPECT(q != nullptr);
            EXPECT(q->attributes() == p->attributes());
            std::unique_ptr<IPluginV3> c(p->clone());
            EXPECT(static_cast<DisentangledAttentionPlugin*>(c.get())->attributes() == p->attributes());
            std::unique_ptr<IPluginV3> attached(p->attachToContext(nullptr));
            EXPECT(static_cast<DisentangledAttentionPlugin*>(attached.get())->attributes() == p->attributes());
        }
    });

    test("corrupt serialized parameters are refused", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        PluginFieldCollection const* stored = p->getFieldsToSerialize();
        std::vector<uint8_t> blob(static_cast<uint8_t const*>(stored->fields[0].data),
            static_cast<uint8_t const*>(stored->fields[0].data) + stored->fields[0].length);
        std::vector<uint8_t> versioned = blob;
        versioned[4] = 99; // format version
        PluginField field("debx_params", versioned.data(), PluginFieldType::kUNKNOWN,
            static_cast<int32_t>(versioned.size()));
        PluginFieldCollection fc{1, &field};
        expectRejected(&fc, "format version 99");
        PluginField truncated("debx_params", blob.data(), PluginFieldType::kUNKNOWN,
            static_cast<int32_t>(blob.size() - 1));
        PluginFieldCollection fc2{1, &truncated};
        expectRejected(&fc2, "bytes, expected");
    });

    test("getOutputShapes: context has the query's symbolic shape", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        FakeBuilder eb;
        IDimensionExpr const* batch = eb.symbol();
        IDimensionExpr const* seq = eb.symbol();
        IDimensionExpr const* hidden = eb.value(768);
        DimsExprs in[6]{};
        for (int32_t t = 0; t < 3; ++t)
        {
            in[t].nbDims = 3;
            in[t].d[0] = batch;
            in[t].d[1] = seq;
            in[t].d[2] = hidden;
        }
        for (int32_t t = 3; t < 5; ++t)
        {
            in[t].nbDims = 2;
            in[t].d[0] = eb.value(512);
            in[t].d[1] = hidden;
        }
        in[5].nbDims = 2;
        in[5].d[0] = batch;
        in[5].d[1] = seq;
        DimsExprs out[1]{};
        EXPECT(p->getOutputShapes(in, 6, nullptr, 0, out, 1, eb) == 0);
        EXPECT(out[0].nbDims == 3 && out[0].d[0] == batch && out[0].d[1] == seq && out[0].d[2] == hidden);
        EXPECT(!out[0].d[1]->isConstant() && out[0].d[2]->getConstantValue() == 768);

        in[0].d[2] = eb.value(770); // not divisible by 12 heads
        gLogger.last.clear();
        EXPECT(p->getOutputShapes(in, 6, nullptr, 0, out, 1, eb) != 0);
        EXPECT(gLogger.last.find("not divisible by num_heads") != std::string::npos);
        in[0].d[2] = hidden;
        in[5].nbDims = 3;
        EXPECT(p->getOutputShapes(in, 6, nullptr, 0, out, 1, eb) != 0);
        EXPECT(p->getOutputShapes(in, 5, nullptr, 0, out, 1, eb) != 0);
    });

    test("supportsFormatCombination: FP32/FP16/BF16 linear, int32 mask, INT8 refused", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
        {
            auto io = ioDescs(t);
            for (int32_t pos = 0; pos < 7; ++pos)
            {
                EXPECT(p->supportsFormatCombination(pos, io.data(), 6, 1));
            }
        }
        for (DataType t : {DataType::kINT8, DataType::kFP8, DataType::kINT32})
        {
            auto io = ioDescs(t);
            EXPECT(!p->supportsFormatCombination(0, io.data(), 6, 1));
        }
        auto io = ioDescs(DataType::kHALF);
        io[1].desc.type = DataType::kFLOAT; // key must follow the query
        EXPECT(!p->supportsFormatCombination(1, io.data(), 6, 1));
        io = ioDescs(DataType::kHALF);
        io[6].desc.type = DataType::kFLOAT; // output too
        EXPECT(!p->supportsFormatCombination(6, io.data(), 6, 1));
        io = ioDescs(DataType::kHALF);
        io[5].desc.type = DataType::kINT64;
        EXPECT(!p->supportsFormatCombination(5, io.data(), 6, 1));
        io = ioDescs(DataType::kHALF);
        io[0].desc.format = TensorFormat::kHWC8;
        EXPECT(!p->supportsFormatCombination(0, io.data(), 6, 1));
        EXPECT(!p->supportsFormatCombination(7, io.data(), 6, 1));
    });

    test("getOutputDataTypes follows the query, refuses INT8", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        DataType out[1];
        DataType in[6] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF,
            DataType::kINT32};
        EXPECT(p->getOutputDataTypes(out, 1, in, 6) == 0 && out[0] == DataType::kHALF);
        in[0] = DataType::kBF16;
        EXPECT(p->getOutputDataTypes(out, 1, in, 6) == 0 && out[0] == DataType::kBF16);
        in[0] = DataType::kINT8;
        EXPECT(p->getOutputDataTypes(out, 1, in, 6) != 0);
    });

    test("configurePlugin checks shapes with wildcards and the profile's max", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        auto io = ioDescs(DataType::kFLOAT);
        EXPECT(p->configurePlugin(io.data(), 6, io.data() + 6, 1) == 0);
        auto badRows = ioDescs(DataType::kFLOAT, 511);
        gLogger.last.clear();
        EXPECT(p->configurePlugin(badRows.data(), 6, badRows.data() + 6, 1) != 0);
        EXPECT(gLogger.last.find("2 * span = 512 rows") != std::string::npos);
        auto badMask = ioDescs(DataType::kFLOAT, 512, 64);
        EXPECT(p->configurePlugin(badMask.data(), 6, badMask.data() + 6, 1) != 0);
        auto io2 = ioDescs(DataType::kFLOAT);
        EXPECT(p->configurePlugin(io2.data(), 5, io2.data() + 5, 1) != 0);
    });

    test("getWorkspaceSize: the tensor-core path's band products and index table at the profile's max", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        auto half = ioDescs(DataType::kHALF);
        // max (8, 128, 768), v3 buckets: N = 128 reads table rows 129..383 (R = 255); two (12, 255, 8 * 128) FP16
        // products and a 255-entry int32 table, each 256-byte aligned. 0 when the library has no Triton cubins.
        size_t const product = ((12ULL * 255 * 1024 * 2 + 255) / 256) * 256;
        size_t const table = ((255ULL * 4 + 255) / 256) * 256;
        size_t const got = p->getWorkspaceSize(half.data(), 6, half.data() + 6, 1);
        EXPECT(got == 0 || got == 2 * product + table);
        auto fp32 = ioDescs(DataType::kFLOAT);
        EXPECT(p->getWorkspaceSize(fp32.data(), 6, fp32.data() + 6, 1) == 0);
    });

    test("onShapeChange and enqueue refuse inconsistent runtime shapes without touching memory", [] {
        Fields f;
        auto p = create(f.collection(), TensorRTPhase::kBUILD);
        auto in = runtimeDescs(DataType::kHALF, 2, 37, 37);
        std::vector<PluginTensorDesc> out{in[0]};
        EXPECT(p->onShapeChange(in.data(), 6, out.data(), 1) == 0);
        auto shortMask = runtimeDescs(DataType::kHALF, 2, 37, 30);
        EXPECT(p->onShapeChange(shortMask.data(), 6, out.data(), 1) != 0);
        // enqueue re-checks: the mask is shorter than N, so the kernel would read past it -> error, no launch.
        void const* inputs[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
        void* outputs[1] = {nullptr};
        gLogger.last.clear();
        EXPECT(p->enqueue(shortMask.data(), out.data(), inputs, outputs, nullptr, nullptr) != 0);
        EXPECT(gLogger.last.find("mask") != std::string::npos);
        auto mixed = runtimeDescs(DataType::kHALF, 2, 37, 37);
        mixed[2].type = DataType::kFLOAT;
        EXPECT(p->enqueue(mixed.data(), out.data(), inputs, outputs, nullptr, nullptr) != 0);
        // An empty batch is valid and launches nothing.
        auto empty = runtimeDescs(DataType::kHALF, 0, 37, 37);
        std::vector<PluginTensorDesc> emptyOut{empty[0]};
        EXPECT(p->enqueue(empty.data(), emptyOut.data(), inputs, outputs, nullptr, nullptr) == 0);
    });

    std::printf("%d passed, %d failed\n", gPassed, gFailed);
    return gFailed == 0 ? 0 : 1;
}
