/*
 * debx: the tensor-core path of DebxDisentangledAttention (see disentangledAttentionTriton.h). No TensorRT types.
 */
#include "disentangledAttentionTriton.h"

#include <cuda.h>

#include <climits>
#include <mutex>
#include <utility>
#include <vector>

#if defined(DEBX_HAVE_TRITON_IMAGES)
#include "disentangledAttentionTritonImages.h"
#endif

namespace debx
{
namespace attention
{
namespace
{

constexpr size_t kAlign = 256;
constexpr float kLog2e = 1.4426950408889634F;

size_t alignUp(size_t bytes)
{
    return (bytes + kAlign - 1) / kAlign * kAlign;
}

//! T[t] = relativeIndex(t - (N - 1), 0) for t in [0, 2N - 1): the shared math header's bucket/clamp rule.
__global__ void relativeTableKernel(Params p, int32_t* table)
{
    int32_t const n = p.seqLen;
    for (int32_t t = blockIdx.x * blockDim.x + threadIdx.x; t < 2 * n - 1; t += gridDim.x * blockDim.x)
    {
        table[t] = relativeIndex(t - (n - 1), 0, p);
    }
}

//! The table rows a length-N input reads: idx is monotone in the distance, so [idx(-(N-1)), idx(N-1)].
std::pair<int32_t, int32_t> tableRows(Params const& p)
{
    return {relativeIndex(-(p.seqLen - 1), 0, p), relativeIndex(p.seqLen - 1, 0, p)};
}

//! The static conditions of the path (the device is checked separately).
bool coveredCase(Params const& p)
{
    if (validateParams(p) != nullptr || p.c2p != 1 || p.p2c != 1 || p.seqLen < 1 || p.batch < 1)
    {
        return false;
    }
#if defined(DEBX_HAVE_TRITON_IMAGES)
    if (p.headSize != triton_images::kHeadSize)
    {
        return false;
    }
#else
    return false;
#endif
    auto const rows = tableRows(p);
    int64_t const bn = static_cast<int64_t>(p.batch) * p.seqLen;
    int64_t const hd = static_cast<int64_t>(p.numHeads) * p.headSize;
    int64_t const r = rows.second - rows.first + 1;
    // the kernel indexes activations and band-product rows with 32-bit offsets
    return bn * hd < INT32_MAX && r * bn < INT32_MAX;
}

#if defined(DEBX_HAVE_TRITON_IMAGES)
//! The four driver functions used, resolved through cudart once (no link against libcuda).
struct Driver
{
    CUresult (*moduleLoadData)(CUmodule*, void const*) = nullptr;
    CUresult (*moduleGetFunction)(CUfunction*, CUmodule, char const*) = nullptr;
    CUresult (*funcSetAttribute)(CUfunction, CUfunction_attribute, int) = nullptr;
    CUresult (*launchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
        CUstream, void**, void**) = nullptr;
    bool ok = false;
};

template <typename F>
bool entryPoint(char const* symbol, F& fn)
{
    void* raw = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion(symbol, &raw, 12000, cudaEnableDefault, &found) != cudaSuccess
        || found != cudaDriverEntryPointSuccess || raw == nullptr)
    {
        return false;
    }
    fn = reinterpret_cast<F>(raw);
    return true;
}

Driver const& driver()
{
    static Driver const d = [] {
        Driver x;
        x.ok = entryPoint("cuModuleLoadData", x.moduleLoadData) && entryPoint("cuModuleGetFunction", x.moduleGetFunction)
            && entryPoint("cuFuncSetAttribute", x.funcSetAttribute) && entryPoint("cuLaunchKernel", x.launchKernel);
        return x;
    }();
    return d;
}

struct Function
{
    CUfunction function = nullptr;
    triton_images::Image const* image = nullptr;
};

struct Loaded
{
    Function attention;
    Function band;
    bool ok() const
    {
        return attention.function != nullptr && band.function != nullptr;
    }
};

//! The newest cubin of (kind, type) that runs on compute capability major.minor (a cubin for sm_XY runs on X.Y'
//! with Y' >= Y), loaded into the current (primary) context; an empty Function when there is none.
Function load(int32_t kind, TritonType type, int32_t major, int32_t minor)
{
    Function f;
    for (auto const& image : triton_images::kImages)
    {
        bool const fits = image.kind == kind && image.dtype == static_cast<int32_t>(type) && image.arch / 10 == major
            && image.arch % 10 <= minor;
        if (fits && (f.image == nullptr || image.arch > f.image->arch))
        {
            f.image = &image;
        }
    }
    Driver const& d = driver();
    if (f.image == nullptr || !d.ok)
    {
        return Function{};
    }
    CUmodule module = nullptr;
    CUfunction function = nullptr;
    if (d.moduleLoadData(&module, f.image->cubin) != CUDA_SUCCESS
        || d.moduleGetFunction(&function, module, f.image->name) != CUDA_SUCCESS)
    {
        return Function{};
    }
    int32_t const shared = f.image->sharedBytes;
    if (shared > 48 * 1024
        && d.funcSetAttribute(function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared) != CUDA_SUCCESS)
    {
        return Function{};
    }
    f.function = function;
    return f; // the module stays loaded for the life of the process
}

//! Both kernels for (device, type), loaded once per device (thread-safe).
Loaded const& loaded(int32_t device, TritonType type)
{
    static std::mutex mutex;
    static std::vector<std::pair<std::pair<int32_t, int32_t>, Loaded>> cache;
    std::lock_guard<std::mutex> lock(mutex);
    auto const key = std::make_pair(device, static_cast<int32_t>(type));
    for (auto const& entry : cache)
    {
        if (entry.first == key)
        {
            return entry.second;
        }
    }
    Loaded result;
    int32_t major = 0;
    int32_t minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess
        && cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess
        && cudaFree(nullptr) == cudaSuccess) // the runtime's primary context is current for the driver calls
    {
        result.attention = load(0, type, major, minor);
        result.band = load(1, type, major, minor);
    }
    cache.emplace_back(key, result);
    return cache.back().second;
}

//! cuLaunchKernel with the kernel's own arguments, then the scratch pointers this Triton version appends.
cudaError_t launch(Function const& f, unsigned gx, unsigned gy, unsigned gz, std::vector<void*> args,
    cudaStream_t stream)
{
    static CUdeviceptr scratch[4] = {0, 0, 0, 0};
    for (int32_t i = 0; i < f.image->extraPointers; ++i)
    {
        args.push_back(&scratch[i]);
    }
    CUresult const r = driver().launchKernel(f.function, gx, gy, gz, static_cast<unsigned>(f.image->numWarps * 32),
        1, 1, static_cast<unsigned>(f.image->sharedBytes), reinterpret_cast<CUstream>(stream), args.data(), nullptr);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorLaunchFailure;
}
#endif

} // namespace

bool tritonPathAvailable(TritonType type, Params const& p)
{
#if defined(DEBX_HAVE_TRITON_IMAGES)
    int32_t device = 0;
    return coveredCase(p) && cudaGetDevice(&device) == cudaSuccess && loaded(device, type).ok();
#else
    (void) type;
    (void) p;
    return false;
#endif
}

size_t tritonWorkspaceBytes(TritonType /*type*/, Params const& p)
{
    if (!coveredCase(p))
    {
        return 0;
    }
    auto const rows = tableRows(p);
    size_t const r = static_cast<size_t>(rows.second - rows.first + 1);
    size_t const bn = static_cast<size_t>(p.batch) * static_cast<size_t>(p.seqLen);
    size_t const product = alignUp(static_cast<size_t>(p.numHeads) * r * bn * 2); // FP16 / BF16 elements
    return 2 * product + alignUp((2 * static_cast<size_t>(p.seqLen) - 1) * sizeof(int32_t));
}

cudaError_t launchDebxAttentionTriton(TritonType type, Params const& p, void const* query, void const* key,
    void const* value, void const* posKey, void const* posQuery, int32_t const* mask, void* out, void* workspace,
    cudaStream_t stream)
{
#if defined(DEBX_HAVE_TRITON_IMAGES)
    if (workspace == nullptr || !tritonPathAvailable(type, p))
    {
        return cudaErrorNotSupported;
    }
    int32_t device = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status != cudaSuccess)
    {
        return status;
    }
    Loaded const& kernels = loaded(device, type);
    auto const rows = tableRows(p);
    int32_t lo = rows.first;
    int32_t r = rows.second - rows.first + 1;
    int32_t n = p.seqLen;
    int32_t bn = p.batch * n;
    int32_t hd = p.numHeads * p.headSize;
    size_t const product = alignUp(static_cast<size_t>(p.numHeads) * r * bn * 2);
    auto* const base = static_cast<char*>(workspace);
    CUdeviceptr c2p = reinterpret_cast<CUdeviceptr>(base);
    CUdeviceptr p2c = reinterpret_cast<CUdeviceptr>(base + product);
    auto* const table = reinterpret_cast<int32_t*>(base + 2 * product);

    // 1. the relative index table for this N (the shared math header's rule)
    int32_t const threads = 256;
    relativeTableKernel<<<(2 * n - 1 + threads - 1) / threads, threads, 0, stream>>>(p, table);
    status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }

    // 2. band products (H, R, B*N): _band_products_fwd(X, POS, OUT, BN, R, lo, stride_x, stride_p)
    unsigned const tile = triton_images::kBandTile;
    for (auto const& term : {std::make_pair(query, posKey), std::make_pair(key, posQuery)})
    {
        CUdeviceptr x = reinterpret_cast<CUdeviceptr>(term.first);
        CUdeviceptr pos = reinterpret_cast<CUdeviceptr>(term.second);
        CUdeviceptr dst = term.first == query ? c2p : p2c;
        int32_t stride = hd;
        status = launch(kernels.band, (static_cast<unsigned>(r) + tile - 1) / tile,
            (static_cast<unsigned>(bn) + tile - 1) / tile, static_cast<unsigned>(p.numHeads),
            {&x, &pos, &dst, &bn, &r, &lo, &stride, &stride}, stream);
        if (status != cudaSuccess)
        {
            return status;
        }
    }

    // 3. the flash kernel, arguments in the order of _debx_attention_fwd
    CUdeviceptr ptrs[8] = {reinterpret_cast<CUdeviceptr>(query), reinterpret_cast<CUdeviceptr>(key),
        reinterpret_cast<CUdeviceptr>(value), c2p, p2c, reinterpret_cast<CUdeviceptr>(mask),
        reinterpret_cast<CUdeviceptr>(table), reinterpret_cast<CUdeviceptr>(out)};
    int32_t ints[5] = {n, p.numHeads, r, lo, n - 1}; // N, H, R, lo, half
    float qkScale = p.scale * kLog2e;
    int32_t strides[10] = {n * hd, hd, n * hd, hd, n * hd, hd, n * hd, hd, n, bn};
    std::vector<void*> args;
    for (auto& x : ptrs)
    {
        args.push_back(&x);
    }
    for (auto& x : ints)
    {
        args.push_back(&x);
    }
    args.push_back(&qkScale);
    for (auto& x : strides)
    {
        args.push_back(&x);
    }
    unsigned const gridX = static_cast<unsigned>((n + triton_images::kBlockQ - 1) / triton_images::kBlockQ);
    return launch(kernels.attention, gridX, static_cast<unsigned>(p.batch * p.numHeads), 1, args, stream);
#else
    (void) type, (void) p, (void) query, (void) key, (void) value, (void) posKey, (void) posQuery, (void) mask;
    (void) out, (void) workspace, (void) stream;
    return cudaErrorNotSupported;
#endif
}

} // namespace attention
} // namespace debx
