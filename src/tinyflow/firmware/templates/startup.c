/* Minimal Cortex-M start-up: vector table, .data copy, .bss zero, FPU enable, main. Portable to any Cortex-M
 * with the linker script's symbols; faults end the program through sh_exit (the harness's semihosting exit). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
extern void sh_exit(int32_t code);

void Reset_Handler(void);
void Fault_Handler(void);

__attribute__((section(".isr_vector"), used)) const void *const tf_vectors[16] = {
    &_estack, (const void *)Reset_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
    (const void *)Fault_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
};

void Fault_Handler(void) { sh_exit(3); }

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: CP10, CP11 full access */
    __asm__ volatile("dsb\n isb");
#endif
    main();
    sh_exit(0);
}
