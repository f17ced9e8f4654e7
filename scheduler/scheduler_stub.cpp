// Anchor translation unit of the scheduler library until its first component lands.
namespace tandem::scheduler_detail {
int anchor() { return 0; }
}  // namespace tandem::scheduler_detail
