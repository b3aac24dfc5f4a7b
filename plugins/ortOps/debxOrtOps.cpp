/*
 * debx: ONNX Runtime custom-op library (CPU execution provider) with the fused debx::DebxDisentangledAttention.
 *
 * Load it with SessionOptions.register_custom_ops_library(path) (Python) or RegisterCustomOpsLibrary (C/C++); the
 * op contract is plugins/disentangledAttention/README.md, the math disentangledAttentionCpu.cpp. Inputs are float32
 * (the mask int32); FP16 graphs are run by casting around the node (debx.runtimes.reference_ops.adapt_for_ort).
 * The (batch, head) tasks run on ONNX Runtime's own intra-op thread pool (KernelContext_ParallelFor), so the op
 * shares the session's threads instead of competing with them.
 *
 * It also registers the ops debx's runner rewrites INT8 graphs onto (debx.runtimes.int8_cpu): the INT8 matmuls
 * (matMulInt8Op.h: AMX, AVX-512 VNNI, AVX-VNNI or AVX2 kernels, by CPUID) and LayerNormalization + QuantizeLinear in
 * one pass (layerNormQuantizeOp.h).
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../disentangledAttention/disentangledAttentionAmx.h"
#include "../disentangledAttention/disentangledAttentionBf16.h"
#include "../disentangledAttention/disentangledAttentionCpu.h"
#include "isaTwins.h"
#include "layerNormQuantizeOp.h"
#include "matMulInt8Cpu.h"
#include "matMulInt8Op.h"
#include "ortAbi.h"
#include "ortHelpers.h"

#if defined(_WIN32)
#define DEBX_ORT_EXPORT extern "C" __declspec(dllexport)
#else
#define DEBX_ORT_EXPORT extern "C" __attribute__((visibility("default")))
#endif

namespace
{

using namespace debx;
using ort::Api;
using ort::describe;
using ort::shapeText;
using ort::Status;

constexpr char const* kDomain = "debx";
constexpr char const* kOpName = "DebxDisentangledAttention";
constexpr size_t kNumInputs = 6;

struct Kernel
{
    Api api;
    attention::Params attrs; // attributes; shapes are filled per call
    //! Constant pos_key / pos_query (initializers) laid out (H, D, P) once at session load; empty when the tables
    //! are computed in the graph or packed as bf16 instead. Keyed by their shape, checked on every call.
    std::vector<float> tableT[2];
    int64_t tableRows = -1;
    int64_t tableWidth = -1;
    //! Optional attribute bf16 (set by debx's INT8 rewrite; attention::Bf16Family): the mixed-precision products of
    //! the family chosen at load (null: float32), which need the constant tables packed as bf16 tiles (then only
    //! those; empty otherwise: float32 path).
    attention::Bf16Kernels const* bf16 = nullptr;
    std::vector<uint16_t> tableBf16[2];
};

Status* fail(Api const& api, std::string const& msg)
{
    std::string const full = std::string(kOpName) + ": " + msg;
    return api.createStatus(ort::kInvalidArgument, full.c_str());
}

struct CallData
{
    attention::CpuPlan const* plan;
    attention::CpuTensors const* tensors;
};

void runTask(void* data, size_t task)
{
    auto const* call = static_cast<CallData const*>(data);
    if (isa::avx512()) // the AVX-512 twin (isaTwins.h); baseline x86-64 otherwise
    {
        isa::attentionRunTaskAvx512(call->plan, call->tensors, static_cast<int64_t>(task));
    }
    else
    {
        attention::cpuRunTask(*call->plan, *call->tensors, static_cast<int64_t>(task));
    }
}

Status* compute(void* opKernel, ort::KernelContext* ctx)
{
    auto const* kernel = static_cast<Kernel const*>(opKernel);
    Api const& api = kernel->api;
    size_t count = 0;
    DEBX_ORT_TRY(api.kernelContextGetInputCount(ctx, &count));
    if (count != kNumInputs)
    {
        return fail(api, "expects 6 inputs (query, key, value, pos_key, pos_query, mask), got " + std::to_string(count));
    }
    ort::Value const* inputs[kNumInputs];
    ort::ElementType types[kNumInputs];
    std::vector<int64_t> dims[kNumInputs];
    char const* names[kNumInputs] = {"query", "key", "value", "pos_key", "pos_query", "mask"};
    for (size_t i = 0; i < kNumInputs; ++i)
    {
        DEBX_ORT_TRY(api.kernelContextGetInput(ctx, i, &inputs[i]));
        if (inputs[i] == nullptr)
        {
            return fail(api, std::string("input ") + names[i] + " is missing");
        }
        DEBX_ORT_TRY(describe(api, inputs[i], &types[i], &dims[i]));
        ort::ElementType const want = i == 5 ? ort::kElementInt32 : ort::kElementFloat;
        if (types[i] != want)
        {
            return fail(api, std::string(names[i]) + " must be " + (i == 5 ? "int32" : "float32"));
        }
    }
    std::vector<int64_t> const& q = dims[0];
    if (q.size() != 3)
    {
        return fail(api, "query must be (B, N, HD), got " + shapeText(q));
    }
    for (size_t i = 1; i < 3; ++i)
    {
        if (dims[i] != q)
        {
            return fail(api, std::string(names[i]) + " shape " + shapeText(dims[i]) + " != query shape " + shapeText(q));
        }
    }
    int64_t const B = q[0];
    int64_t const N = q[1];
    int64_t const HD = q[2];
    if (dims[5].size() != 2 || dims[5][0] != B || dims[5][1] != N)
    {
        return fail(api, "mask must be (B, N) = " + shapeText({B, N}) + ", got " + shapeText(dims[5]));
    }
    attention::Params p = kernel->attrs;
    if (p.numHeads <= 0 || HD % p.numHeads != 0)
    {
        return fail(api, "hidden size " + std::to_string(HD) + " is not a multiple of num_heads "
                + std::to_string(p.numHeads));
    }
    if (B > INT32_MAX || N > INT32_MAX)
    {
        return fail(api, "batch or sequence length too large");
    }
    p.batch = static_cast<int32_t>(B);
    p.seqLen = static_cast<int32_t>(N);
    p.headSize = static_cast<int32_t>(HD / p.numHeads);
    for (size_t i = 3; i < 5; ++i)
    {
        if (dims[i].size() != 2 || dims[i][1] != HD)
        {
            return fail(api, std::string(names[i]) + " must be (P, " + std::to_string(HD) + "), got "
                    + shapeText(dims[i]));
        }
    }
    if (dims[3] != dims[4])
    {
        return fail(api, "pos_key and pos_query shapes differ: " + shapeText(dims[3]) + " vs " + shapeText(dims[4]));
    }
    p.posRows = static_cast<int32_t>(dims[3][0]);
    std::vector<int32_t> indexByDistance(N > 0 ? static_cast<size_t>(2 * N - 1) : 0);
    attention::CpuPlan plan{};
    if (char const* err = attention::cpuPlan(p, indexByDistance.data(), &plan))
    {
        return fail(api, err);
    }

    void* data[kNumInputs];
    for (size_t i = 0; i < kNumInputs; ++i)
    {
        DEBX_ORT_TRY(api.getTensorMutableData(const_cast<ort::Value*>(inputs[i]), &data[i]));
    }
    int64_t const outDims[3] = {B, N, HD};
    ort::Value* output = nullptr;
    DEBX_ORT_TRY(api.kernelContextGetOutput(ctx, 0, outDims, 3, &output));
    void* outData = nullptr;
    DEBX_ORT_TRY(api.getTensorMutableData(output, &outData));

    attention::CpuTensors tensors{static_cast<float const*>(data[0]), static_cast<float const*>(data[1]),
        static_cast<float const*>(data[2]), static_cast<float const*>(data[3]), static_cast<float const*>(data[4]),
        static_cast<int32_t const*>(data[5]), static_cast<float*>(outData)};
    if (kernel->tableRows == dims[3][0] && kernel->tableWidth == HD)
    {
        if (kernel->tableBf16[0].empty())
        {
            tensors.posKeyT = kernel->tableT[0].data();
            tensors.posQueryT = kernel->tableT[1].data();
        }
        else
        {
            tensors.bf16 = kernel->bf16;
            tensors.posKeyBf16 = kernel->tableBf16[0].data();
            tensors.posQueryBf16 = kernel->tableBf16[1].data();
        }
    }
    size_t const tasks = static_cast<size_t>(B) * static_cast<size_t>(p.numHeads);
    if (tasks == 0 || N == 0)
    {
        return nullptr;
    }
    CallData call{&plan, &tensors};
    return api.kernelContextParallelFor(ctx, runTask, tasks, 0, &call);
}

//! When both tables are constant float32 (P, HD) initializers, transpose them once (else leave tableT empty).
void prepareTables(Api const& api, ort::KernelInfo const* info, Kernel* kernel)
{
    std::vector<int64_t> shapes[2];
    float const* tables[2] = {nullptr, nullptr};
    for (int i = 0; i < 2; ++i)
    {
        int isConstant = 0;
        ort::Value const* value = nullptr;
        if (Status* status = api.kernelInfoGetConstantInput(info, 3 + i, &isConstant, &value))
        {
            api.releaseStatus(status);
            return;
        }
        ort::ElementType type = ort::kElementUndefined;
        if (!isConstant || value == nullptr)
        {
            return;
        }
        if (Status* status = describe(api, value, &type, &shapes[i]))
        {
            api.releaseStatus(status);
            return;
        }
        void* data = nullptr;
        if (type != ort::kElementFloat || shapes[i].size() != 2)
        {
            return;
        }
        if (Status* status = api.getTensorMutableData(const_cast<ort::Value*>(value), &data))
        {
            api.releaseStatus(status);
            return;
        }
        tables[i] = static_cast<float const*>(data);
    }
    attention::Params const& p = kernel->attrs;
    int64_t const rows = shapes[0][0];
    int64_t const width = shapes[0][1];
    if (shapes[0] != shapes[1] || p.numHeads <= 0 || width % p.numHeads != 0 || rows <= 0 || rows > INT32_MAX)
    {
        return;
    }
    kernel->tableRows = rows;
    kernel->tableWidth = width;
    int32_t const headSize = static_cast<int32_t>(width / p.numHeads);
    bool const bf16 = kernel->bf16 != nullptr; // then the float32 layout would go unread
    for (int i = 0; i < 2; ++i)
    {
        if (bf16)
        {
            int64_t const tiles = attention::amx::tableTilesPerHead(static_cast<int32_t>(rows), headSize);
            kernel->tableBf16[i].resize(static_cast<size_t>(p.numHeads * tiles * attention::amx::kTileElems));
            attention::amx::packTable(tables[i], static_cast<int32_t>(rows), p.numHeads, headSize,
                kernel->tableBf16[i].data());
        }
        else
        {
            kernel->tableT[i].resize(static_cast<size_t>(attention::cpuTableStride(rows) * width));
            attention::cpuTransposeTable(tables[i], static_cast<int32_t>(rows), p.numHeads, headSize,
                kernel->tableT[i].data());
        }
    }
}

Status* createKernel(ort::CustomOp const*, void const* apiTable, ort::KernelInfo const* info, void** out)
{
    Api const api(static_cast<void const* const*>(apiTable));
    auto* kernel = new Kernel{api, attention::Params{}, {}, -1, -1, nullptr, {}};
    attention::Params& p = kernel->attrs;
    struct IntAttr
    {
        char const* name;
        int32_t* field;
    } const ints[] = {{"num_heads", &p.numHeads}, {"span", &p.span}, {"position_buckets", &p.positionBuckets},
        {"max_relative_positions", &p.maxRelativePositions}, {"c2p", &p.c2p}, {"p2c", &p.p2c}};
    for (IntAttr const& a : ints)
    {
        int64_t value = 0;
        if (Status* status = api.kernelInfoGetAttributeInt64(info, a.name, &value))
        {
            api.releaseStatus(status);
            delete kernel;
            return fail(api, std::string("missing int attribute ") + a.name);
        }
        if (value < INT32_MIN || value > INT32_MAX)
        {
            delete kernel;
            return fail(api, std::string("attribute ") + a.name + " out of range");
        }
        *a.field = static_cast<int32_t>(value);
    }
    if (Status* status = api.kernelInfoGetAttributeFloat(info, "scale", &p.scale))
    {
        api.releaseStatus(status);
        delete kernel;
        return fail(api, "missing float attribute scale");
    }
    int64_t bf16 = 0;
    if (Status* status = api.kernelInfoGetAttributeInt64(info, "bf16", &bf16)) // optional
    {
        api.releaseStatus(status);
        bf16 = 0;
    }
    if (attention::bf16FamilyName(bf16 < 0 || bf16 > INT32_MAX ? -1 : static_cast<int>(bf16)) == nullptr)
    {
        delete kernel;
        return fail(api, "unknown bf16 mode " + std::to_string(bf16)
                + " (0 = float32, 1 = the best here, 2 = amx-bf16, 3 = avx512-bf16, 4 = avx512-bf16-emulated)");
    }
    kernel->bf16 = static_cast<attention::Bf16Kernels const*>(isa::attentionBf16Kernels(static_cast<int>(bf16)));
    if (kernel->bf16 == nullptr && bf16 > static_cast<int64_t>(attention::Bf16Family::kBest))
    {
        delete kernel;
        return fail(api, std::string("this CPU (or OS) cannot run the bf16 mode ")
                + attention::bf16FamilyName(static_cast<int>(bf16)) + " (or DEBX_CPU_ISA=baseline is set)");
    }
    prepareTables(api, info, kernel);
    *out = kernel;
    return nullptr;
}

void destroyKernel(void* kernel)
{
    delete static_cast<Kernel*>(kernel);
}

ort::CustomOp makeOp()
{
    ort::CustomOp op = ort::baseOp();
    op.getName = [](ort::CustomOp const*) { return kOpName; };
    op.getInputType = [](ort::CustomOp const*, size_t i) { return i == 5 ? ort::kElementInt32 : ort::kElementFloat; };
    op.getInputTypeCount = [](ort::CustomOp const*) { return kNumInputs; };
    op.getOutputType = [](ort::CustomOp const*, size_t) { return ort::kElementFloat; };
    op.kernelDestroy = destroyKernel;
    op.createKernelV2 = createKernel;
    op.kernelComputeV2 = compute;
    return op;
}

ort::CustomOp const gOp = makeOp();

//! DEBX_ORT_OPS_SELFTEST=1: check the slot numbers of ortAbi.h against the running library before registering.
Status* selfTest(Api const& api)
{
    Status* probe = api.createStatus(ort::kInvalidArgument, "debx-probe");
    bool const statusOk = probe != nullptr && api.getErrorCode(probe) == ort::kInvalidArgument
        && std::strcmp(api.getErrorMessage(probe), "debx-probe") == 0;
    if (probe != nullptr)
    {
        api.releaseStatus(probe);
    }
    if (!statusOk)
    {
        return api.createStatus(ort::kFail, "debx ORT ABI self-test: status slots do not match");
    }
    char const* build = api.getBuildInfoString();
    if (build == nullptr || std::strncmp(build, "ORT Build Info", 14) != 0)
    {
        return api.createStatus(ort::kFail, "debx ORT ABI self-test: build-info slot does not match");
    }
    std::fprintf(stderr, "debx ORT ABI self-test passed: %s\n", build);
    return nullptr;
}

} // namespace

DEBX_ORT_EXPORT Status* RegisterCustomOps(ort::SessionOptions* options, ort::ApiBase const* base)
{
    void const* const* table = base->getApi(ort::kApiVersion);
    if (table == nullptr)
    {
        // an older runtime: report through the first API version, which every release serves
        void const* const* v1 = base->getApi(1);
        if (v1 == nullptr)
        {
            return nullptr;
        }
        std::string const msg = std::string("libdebx_ort_ops needs ONNX Runtime >= 1.18 (C API ")
            + std::to_string(ort::kApiVersion) + "); this is " + base->getVersionString();
        return Api(v1).createStatus(ort::kFail, msg.c_str());
    }
    Api const api(table);
    char const* selftest = std::getenv("DEBX_ORT_OPS_SELFTEST");
    if (selftest != nullptr && selftest[0] == '1')
    {
        DEBX_ORT_TRY(selfTest(api));
    }
    // the domain must outlive every session that uses it: one per registration, kept for the process lifetime
    ort::CustomOpDomain* domain = nullptr;
    DEBX_ORT_TRY(api.createCustomOpDomain(kDomain, &domain));
    DEBX_ORT_TRY(api.customOpDomainAdd(domain, &gOp));
    size_t count = 0;
    ort::CustomOp const* matMuls = ort::matMulInt8Ops(&count);
    for (size_t i = 0; i < count; ++i)
    {
        DEBX_ORT_TRY(api.customOpDomainAdd(domain, &matMuls[i]));
    }
    DEBX_ORT_TRY(api.customOpDomainAdd(domain, ort::layerNormQuantizeOp()));
    return api.addCustomOpDomain(options, domain);
}

//! 1 when the debx::DebxMatMulInt8* ops can run here (AMX-INT8 present and granted by the OS), else 0. For the
//! Python runner (ctypes), which only rewrites graphs to them then.
DEBX_ORT_EXPORT int debx_ort_ops_amx_available()
{
    return debx::int8::familyAvailable(debx::int8::Family::kAmx) ? 1 : 0;
}

//! 1 when this CPU can run the INT8 matmul kernel family `family` (1 = avx512-vnni, 2 = amx, 3 = avx2, 4 = avx-vnni;
//! 0 = ort, always 1), else 0. For the Python runner, which picks the family and writes it into the rewritten nodes.
DEBX_ORT_EXPORT int debx_ort_ops_int8_family_available(int family)
{
    if (family < 0 || family >= debx::int8::kFamilyCount)
    {
        return 0;
    }
    return debx::int8::familyAvailable(static_cast<debx::int8::Family>(family)) ? 1 : 0;
}

//! The instructions the float kernels (attention, LayerNormalization + QuantizeLinear) run on here: "avx512" (the
//! AVX-512 twins, isaTwins.h) or "baseline" (x86-64; also when $DEBX_CPU_ISA=baseline).
DEBX_ORT_EXPORT char const* debx_ort_ops_isa()
{
    return debx::isa::avx512() ? "avx512" : "baseline";
}

//! 1 when DebxDisentangledAttention's bf16 mode runs on AMX-BF16 tiles here, else 0.
DEBX_ORT_EXPORT int debx_ort_ops_amx_bf16_available()
{
    return debx::isa::attentionBf16Kernels(static_cast<int>(debx::attention::Bf16Family::kAmx)) != nullptr ? 1 : 0;
}

//! 1 when DebxDisentangledAttention's bf16 mode `family` (2 = amx-bf16, 3 = avx512-bf16, 4 = avx512-bf16-emulated;
//! 1 = the best bf16 family here) runs on this CPU, else 0; 0 = float32 always runs.
DEBX_ORT_EXPORT int debx_ort_ops_attention_bf16_available(int family)
{
    return family == 0 || debx::isa::attentionBf16Kernels(family) != nullptr ? 1 : 0;
}

namespace
{

debx::attention::Bf16Kernels const* laneKernels(int family)
{
    bool const lanes = family == static_cast<int>(debx::attention::Bf16Family::kAvx512Bf16)
        || family == static_cast<int>(debx::attention::Bf16Family::kAvx512Bf16Emulated);
    return lanes ? static_cast<debx::attention::Bf16Kernels const*>(debx::isa::attentionBf16Kernels(family)) : nullptr;
}

} // namespace

//! Test hook: acc[i] (n floats, n % 16 == 0) = VDPBF16PS(acc, a, b) over the 2 n bf16 of a and b, as bf16 family
//! `family` runs it (3 = the instruction, 4 = its emulation). 0 when done; -1 when that family cannot run here or n
//! is not a multiple of 16.
DEBX_ORT_EXPORT int debx_ort_ops_bf16_dot(int family, float* acc, uint16_t const* a, uint16_t const* b, int64_t n)
{
    debx::attention::Bf16Kernels const* k = laneKernels(family);
    if (k == nullptr || n < 0 || n % 16 != 0)
    {
        return -1;
    }
    k->dotLanes(acc, a, b, n);
    return 0;
}

//! Test hook: out[i] = bf16(x[i]) by VCVTNE2PS2BF16 (n % 32 == 0), as bf16 family `family` runs it; like
//! debx_ort_ops_bf16_dot.
DEBX_ORT_EXPORT int debx_ort_ops_bf16_convert(int family, float const* x, uint16_t* out, int64_t n)
{
    debx::attention::Bf16Kernels const* k = laneKernels(family);
    if (k == nullptr || n < 0 || n % 32 != 0)
    {
        return -1;
    }
    k->convertLanes(x, out, n);
    return 0;
}
