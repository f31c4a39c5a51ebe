/* Minimal Cortex-M start-up: vector table, .data copy, .bss zero, FPU enable, main. Portable to any Cortex-M
 * with the linker script's symbols; Fault_Handler is weak (the qemu harness overrides it to exit qemu). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);

void Reset_Handler(void);
void Fault_Handler(void);

__attribute__((section(".isr_vector"), used)) const void *const tf_vectors[16] = {
    &_estack, (const void *)Reset_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
    (const void *)Fault_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
};

__attribute__((weak)) void Fault_Handler(void) {
    for (;;) {
    }
}

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: CP10, CP11 full access */
    __asm__ volatile("dsb\n isb");
#endif
    main();
    for (;;) {
    }
}
