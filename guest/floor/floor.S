/*
 * The benchmark floor: the smallest PVH kernel QEMU can boot. It prints one
 * line on COM1 and powers off through isa-debug-exit, so "QEMU start -> this
 * line" is the cost of the VMM alone, before any kit code runs.
 */
        .section .note.Xen, "a", @note
        .p2align 2
        .long 4                 /* name size ("Xen\0") */
        .long 4                 /* descriptor size */
        .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .p2align 2
        .long floor_start

        .section .text, "ax"
        .code32
        .globl floor_start
floor_start:
        cli
        mov $floor_line, %esi
        mov $0x3f8, %dx
1:      lodsb
        test %al, %al
        jz 2f
        out %al, %dx
        jmp 1b
2:      xor %al, %al            /* isa-debug-exit: QEMU exits with 2*0+1 = 1 */
        mov $0x501, %dx
        out %al, %dx
3:      hlt
        jmp 3b

        .section .rodata, "a"
floor_line:
        .asciz "SWIFTLET-FLOOR\n"
